//! What a notification says: a subject, a plain-text body, an HTML body
//! (every value escaped) and a Slack text, from one group of alerts.
//!
//! A group's AI analysis is one text for the whole group (every alert of
//! the group carries the same one): each body shows it once, after the
//! alerts — as Markdown in the text part, rendered and sanitised in the
//! HTML part ([`super::markdown`]), escaped for Slack.

use netspectra_model::alert::{key_text, rfc3339, AlertRecord};
use std::fmt::Write;

/// `NetSpectra: 2 firing, 1 resolved`.
pub fn subject(alerts: &[AlertRecord]) -> String {
    let firing = alerts.iter().filter(|a| a.state == "firing").count();
    format!(
        "NetSpectra: {firing} firing, {} resolved",
        alerts.len() - firing
    )
}

/// One line per alert, with its times.
pub fn plain(alerts: &[AlertRecord]) -> String {
    let mut out = String::new();
    for a in alerts {
        let _ = writeln!(out, "{}", a.summary());
        let _ = writeln!(
            out,
            "  task {}, window starting {}, firing since {}{}",
            a.task,
            rfc3339(a.window_start_ns),
            rfc3339(a.starts_at_ns),
            a.ends_at_ns
                .map(|t| format!(", resolved at {}", rfc3339(t)))
                .unwrap_or_default()
        );
    }
    for analysis in analyses(alerts) {
        let _ = write!(out, "\nAnalysis:\n\n{}\n", analysis.trim_end());
    }
    out
}

/// The distinct analyses of a group, in order (one, when the dispatcher
/// analysed the group).
pub fn analyses(alerts: &[AlertRecord]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for a in alerts {
        if let Some(text) = a.analysis.as_deref().filter(|t| !t.trim().is_empty()) {
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
    }
    seen
}

/// A table of the alerts; everything from data or config is escaped.
pub fn html(alerts: &[AlertRecord]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html><body><h2>NetSpectra alerts</h2>\
<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\
<tr><th>state</th><th>rule</th><th>key</th><th>value</th><th>condition</th><th>severity</th><th>since</th><th>resolved</th></tr>",
    );
    for a in alerts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.state),
            escape(&a.rule),
            escape(&key_text(&a.key)),
            a.value,
            escape(&a.metric),
            escape(&a.operator),
            a.threshold,
            escape(&a.severity),
            rfc3339(a.starts_at_ns),
            a.ends_at_ns.map(rfc3339).unwrap_or_default()
        );
    }
    out.push_str("</table>");
    for analysis in analyses(alerts) {
        let _ = write!(
            out,
            "<h3>Analysis</h3><div class=\"analysis\">{}</div>",
            super::markdown::to_safe_html(analysis)
        );
    }
    out.push_str("</body></html>");
    out
}

/// Slack's `text`: a headline, one line per alert, then the analysis.
/// Slack reads `<…>` as links and mentions (`<!channel>`), so `& < >` in
/// anything from data, config or the model are escaped as it asks.
pub fn slack(alerts: &[AlertRecord]) -> String {
    let mut out = format!("*{}*\n", subject(alerts));
    for a in alerts {
        let _ = writeln!(out, "• {}", slack_escape(&a.summary()));
    }
    for analysis in analyses(alerts) {
        let _ = write!(out, "\n{}\n", slack_escape(analysis.trim_end()));
    }
    out
}

/// Slack's escaping of message text: `&`, `<` and `>` only.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// HTML-escapes text (`& < > " '`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_never_carries_markup_from_data() {
        let a = AlertRecord {
            rule: "<script>alert(1)</script>".into(),
            task: "t".into(),
            key: r#"{"SrcIP":"10.0.0.1"}"#.into(),
            metric: "bytes".into(),
            value: 1.0,
            operator: ">".into(),
            threshold: 0.0,
            severity: "warning".into(),
            state: "firing".into(),
            window_start_ns: 0,
            starts_at_ns: 0,
            ends_at_ns: None,
            analysis: Some("<b>x</b>".into()),
        };
        let h = html(std::slice::from_ref(&a));
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"));
        assert_eq!(subject(&[a]), "NetSpectra: 1 firing, 0 resolved");
    }

    fn alert(rule: &str, analysis: Option<&str>) -> AlertRecord {
        AlertRecord {
            rule: rule.into(),
            task: "per_src_ip".into(),
            key: r#"{"SrcIP":"10.0.0.1"}"#.into(),
            metric: "bytes".into(),
            value: 2.0,
            operator: ">".into(),
            threshold: 1.0,
            severity: "warning".into(),
            state: "firing".into(),
            window_start_ns: 0,
            starts_at_ns: 0,
            ends_at_ns: None,
            analysis: analysis.map(str::to_string),
        }
    }

    #[test]
    fn a_group_analysis_is_shown_once_in_each_form() {
        let md = "**Scan** from 10.0.0.1 <script>x()</script> & more";
        let group = [alert("a", Some(md)), alert("b", Some(md))];
        let h = html(&group);
        assert_eq!(h.matches("<h3>Analysis</h3>").count(), 1, "{h}");
        assert!(h.contains("<strong>Scan</strong>"), "{h}");
        assert!(!h.contains("<script") && !h.contains("x()"), "{h}");
        let p = plain(&group);
        assert_eq!(p.matches("Analysis:").count(), 1, "{p}");
        assert!(
            p.contains(md),
            "the text part carries the Markdown as is: {p}"
        );
        let s = slack(&group);
        assert_eq!(s.matches("*Scan*").count(), 1, "{s}");
        assert!(
            s.contains("&lt;script&gt;x()&lt;/script&gt; &amp; more"),
            "{s}"
        );
        assert!(s.contains("bytes=2 &gt; 1"), "{s}");
        let none = [alert("a", None)];
        assert!(!html(&none).contains("Analysis") && !plain(&none).contains("Analysis"));
    }
}
