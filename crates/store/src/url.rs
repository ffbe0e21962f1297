//! Store URLs as users write them on the command line and in config.

use crate::StoreError;
use std::path::PathBuf;

/// A parsed store location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// Embedded SQLite file (`sqlite:PATH` or a bare path).
    Sqlite(PathBuf),
    /// A ClickHouse server's HTTP interface
    /// (`clickhouse://[user:pass@]host:http_port/database`).
    ClickHouse(ClickHouseUrl),
}

/// Where a ClickHouse store lives (**contract**:
/// `clickhouse://[user:pass@]host:http_port/database`).
///
/// `Display` leaves the password out, so the URL can go into logs and error
/// messages.
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseUrl {
    /// User name (`default` when the URL has none).
    pub user: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Host name or address (IPv6 in brackets).
    pub host: String,
    /// HTTP port (8123 by default on a server).
    pub port: u16,
    /// Database; created on open if missing.
    pub database: String,
}

impl ClickHouseUrl {
    /// The user the server sees (`default` when the URL names none).
    pub fn user_name(&self) -> &str {
        self.user
            .as_deref()
            .filter(|u| !u.is_empty())
            .unwrap_or("default")
    }

    /// `authentication failed for user U` when a server's error says the
    /// user or password was refused (ClickHouse codes 192 unknown user,
    /// 193 wrong password, 516 authentication failed): the server answered,
    /// so this is not an outage, and retrying will not help.
    pub fn auth_failure(&self, server_error: &str) -> Option<String> {
        let refused = [
            "Code: 192",
            "Code: 193",
            "Code: 516",
            "Wrong password",
            "Authentication failed",
            "Unknown user",
        ];
        refused.iter().any(|m| server_error.contains(m)).then(|| {
            format!(
                "authentication failed for user {}: check the user and password in the store URL",
                self.user_name()
            )
        })
    }

    /// `http://host:port`, what the HTTP client connects to.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    fn parse(url: &str) -> Result<ClickHouseUrl, String> {
        const SHAPE: &str = "expected clickhouse://[user:pass@]host:http_port/database";
        let rest = url
            .strip_prefix("clickhouse://")
            .ok_or_else(|| SHAPE.to_string())?;
        let (authority, database) = rest
            .split_once('/')
            .ok_or_else(|| format!("no database; {SHAPE}"))?;
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                None => (Some(u.to_string()), None),
            },
        };
        if user.as_deref() == Some("") {
            return Err(format!("empty user name; {SHAPE}"));
        }
        let (host, port) = hostport
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("no host:port; {SHAPE}"))?;
        if host.starts_with('[') != host.ends_with(']') {
            return Err(format!("bad IPv6 host `{host}`; {SHAPE}"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port `{port}`; {SHAPE}"))?;
        let database = database.trim_end_matches('/');
        if database.is_empty() {
            return Err(format!("no database; {SHAPE}"));
        }
        let valid = database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !database.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "database name `{database}` must be letters, digits and `_` (not starting with a digit)"
            ));
        }
        Ok(ClickHouseUrl {
            user,
            password,
            host: host.to_string(),
            port,
            database: database.to_string(),
        })
    }
}

impl std::fmt::Display for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("clickhouse://")?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}:{}/{}", self.host, self.port, self.database)
    }
}

impl std::fmt::Debug for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClickHouseUrl({self})")
    }
}

impl StoreUrl {
    /// Parses `sqlite:PATH`, `sqlite://PATH`, a bare path, or
    /// `clickhouse://[user:pass@]host:http_port/database`.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            // The message is printed and logged: never with the password.
            url: netspectra_model::redact::redact_urls(url),
            reason: reason.to_string(),
        };
        let url_trim = url.trim();
        if url_trim.is_empty() {
            return Err(bad(
                "empty; use sqlite:PATH, a file path, clickhouse://host:port/db (or --no-store)",
            ));
        }
        if let Some(rest) = url_trim.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("sqlite: needs a file path, e.g. sqlite:netspectra.db"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url_trim.starts_with("clickhouse:") {
            return ClickHouseUrl::parse(url_trim)
                .map(StoreUrl::ClickHouse)
                .map_err(|reason| bad(&reason));
        }
        if let Some((scheme, _)) = url_trim.split_once("://") {
            return Err(bad(&format!(
                "unknown scheme `{scheme}`; allowed: sqlite:PATH, a file path or clickhouse://[user:pass@]host:http_port/database"
            )));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(url_trim)))
    }
}
