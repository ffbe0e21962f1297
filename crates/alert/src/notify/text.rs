//! What a notification says: a subject, a plain-text body, an HTML body
//! (every value escaped) and a Slack text, from one group of alerts.

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
        if let Some(analysis) = &a.analysis {
            let _ = writeln!(out, "  analysis: {analysis}");
        }
    }
    out
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
    for a in alerts.iter().filter(|a| a.analysis.is_some()) {
        let _ = write!(
            out,
            "<h3>{}</h3><pre>{}</pre>",
            escape(&a.rule),
            escape(a.analysis.as_deref().unwrap_or_default())
        );
    }
    out.push_str("</body></html>");
    out
}

/// Slack's `text`: a headline and one line per alert.
pub fn slack(alerts: &[AlertRecord]) -> String {
    let mut out = format!("*{}*\n", subject(alerts));
    for a in alerts {
        let _ = writeln!(out, "• {}", a.summary());
    }
    out
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
        assert!(!h.contains("<script>") && !h.contains("<b>x"), "{h}");
        assert!(h.contains("&lt;script&gt;"));
        assert_eq!(subject(&[a]), "NetSpectra: 1 firing, 0 resolved");
    }
}
