//! Secrets out of URLs before they are printed, logged, stored or served.
//!
//! Users put credentials in URLs (`nats://user:password@host`,
//! `clickhouse://user:password@host:8123/db`, `http://user:password@host`,
//! NATS token auth `nats://token@host`). Every place that shows a URL to
//! someone other than the process that connects with it goes through
//! [`redact_urls`] (or its `Display` form [`Redacted`]), so a password never
//! reaches stderr, a log, the `runs` table or an API answer.
//!
//! ```
//! use netspectra_model::redact::redact_urls;
//! assert_eq!(redact_urls("nats://u:pw@h:4222"), "nats://u:***@h:4222");
//! assert_eq!(redact_urls("nats://s3cret@h"), "nats://***@h");
//! assert_eq!(redact_urls("clickhouse://default@h:8123/db"), "clickhouse://default@h:8123/db");
//! ```

use std::fmt;

/// Schemes whose user-only userinfo is a secret (NATS token auth).
const TOKEN_SCHEMES: &[&str] = &["nats", "tls", "ws", "wss"];

/// `text` with the password (or NATS token) of every URL in it replaced by
/// `***`; everything else is kept, so the message still says where.
///
/// A URL's userinfo is what precedes the last `@` of its authority (which
/// ends at `/`, `?`, `#`, whitespace, `,` or a quote), as RFC 3986 and the
/// NATS and HTTP clients read it. Comma-separated server lists are handled
/// URL by URL.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let scheme = &rest[scheme_start..sep];
        let auth_start = sep + 3;
        let auth_len = rest[auth_start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | ',' | '"' | '\'' | '`') || c.is_whitespace()
            })
            .unwrap_or(rest.len() - auth_start);
        let authority = &rest[auth_start..auth_start + auth_len];
        out.push_str(&rest[..auth_start]);
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None if TOKEN_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
                        out.push_str("***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &rest[auth_start + auth_len..];
    }
    out.push_str(rest);
    out
}

/// [`redact_urls`], and also the `password` fields of `Debug` output
/// (`password: Some("…")`, `password: "…"`), as libraries print a parsed
/// URL in their debug logs: the last guard in front of stderr.
pub fn redact_secrets(text: &str) -> String {
    let text = redact_urls(text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("password: ") {
        let after = i + "password: ".len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let (prefix, quoted) = match rest.strip_prefix("Some(\"") {
            Some(q) => ("Some(\"", q),
            None => match rest.strip_prefix('"') {
                Some(q) => ("\"", q),
                None => continue,
            },
        };
        // The Debug form escapes quotes inside, so the first unescaped `"`
        // ends the value.
        let mut end = None;
        let mut escaped = false;
        for (j, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(j);
                    break;
                }
                _ => {}
            }
        }
        out.push_str(prefix);
        out.push_str("***");
        rest = &quoted[end.unwrap_or(quoted.len())..];
    }
    out.push_str(rest);
    out
}

/// Displays a text with every URL's password replaced by `***`
/// ([`redact_urls`]): `tracing::info!(url = %Redacted(&url))`.
#[derive(Clone, Copy, Debug)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_urls(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_secrets, redact_urls};

    #[test]
    fn debug_password_fields_are_hidden() {
        let text = r#"server=ServerAddr(Url { scheme: "nats", username: "alice", password: Some("hun\"ter2"), host: Some(Domain("h")) }) other password: "hunter2" nats://a:hunter2@h"#;
        let got = redact_secrets(text);
        assert!(!got.contains("hunter2") && !got.contains("ter2"), "{got}");
        assert!(got.contains(r#"password: Some("***"), host"#), "{got}");
        assert!(got.contains(r#"password: "***" nats://a:***@h"#), "{got}");
        assert_eq!(redact_secrets("password: none"), "password: none");
    }

    #[test]
    fn every_kind_of_url_loses_its_password() {
        let cases = [
            (
                "nats://alice:hunter2@10.0.0.1:4222",
                "nats://alice:***@10.0.0.1:4222",
            ),
            ("nats://hunter2@nats:4222", "nats://***@nats:4222"),
            ("tls://alice:hunter2@nats:4222", "tls://alice:***@nats:4222"),
            (
                "clickhouse://default:hunter2@127.0.0.1:8123/netspectra",
                "clickhouse://default:***@127.0.0.1:8123/netspectra",
            ),
            (
                "http://bob:hunter2@api:8080/api/v1",
                "http://bob:***@api:8080/api/v1",
            ),
            ("https://bob:hunter2@api/x?y=1", "https://bob:***@api/x?y=1"),
            // A password holding `@` or `:` is cut at the last `@`.
            ("nats://a:p@ss:w@h:1", "nats://a:***@h:1"),
            // Server lists, URLs inside messages and flags.
            (
                "nats://a:hunter2@h1:4222,nats://b:hunter2@h2:4222",
                "nats://a:***@h1:4222,nats://b:***@h2:4222",
            ),
            (
                "cannot connect to NATS at nats://a:hunter2@h: refused",
                "cannot connect to NATS at nats://a:***@h: refused",
            ),
            ("--nats=nats://a:hunter2@h", "--nats=nats://a:***@h"),
            // Nothing to hide.
            ("sqlite:/tmp/x.db", "sqlite:/tmp/x.db"),
            ("/var/lib/ns/results.db", "/var/lib/ns/results.db"),
            (
                "clickhouse://default@h:8123/db",
                "clickhouse://default@h:8123/db",
            ),
            ("http://h:8080/a@b", "http://h:8080/a@b"),
            ("no url at all", "no url at all"),
            ("://", "://"),
        ];
        for (given, want) in cases {
            let got = redact_urls(given);
            assert_eq!(got, want, "{given}");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }
}
