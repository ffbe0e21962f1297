//! The notifiers against real receivers: mail through a real SMTP server
//! (aiosmtpd, started here), webhooks to a real HTTP server; retries, and
//! failures counted without blocking the sender.

use netspectra_alert::notify::Dispatcher;
use netspectra_alert::{Notice, Retry, Rules};
use netspectra_model::alert::AlertRecord;
use netspectra_model::config::Config;
use netspectra_model::task::configured_tasks;
use netspectra_testkit::smtp::SmtpSink;
use netspectra_testkit::webhook::WebhookReceiver;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn rules(yaml: &str) -> (Rules, Config) {
    let config = Config::from_yaml(yaml, &|_| None).unwrap();
    let rules = Rules::from_config(&config, &configured_tasks(&config)).unwrap();
    (rules, config)
}

fn notice(rule: &str, ip: &str, state: &str) -> Notice {
    Notice {
        alert: AlertRecord {
            rule: rule.into(),
            task: "per_src_ip".into(),
            key: format!(r#"{{"SrcIP":"{ip}"}}"#),
            metric: "bytes".into(),
            value: 612_000_000.0,
            operator: ">".into(),
            threshold: 5e8,
            severity: "warning".into(),
            state: state.into(),
            window_start_ns: 1_767_225_600_000_000_000,
            starts_at_ns: 1_767_225_660_000_000_000,
            ends_at_ns: (state == "resolved").then_some(1_767_225_720_000_000_000),
            analysis: None,
        },
        repeat: false,
    }
}

const FAST: Retry = Retry {
    attempts: 3,
    first_delay: Duration::from_millis(50),
};

/// The header `name` of a raw message (unfolded).
fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or(message);
    let head = head.replace("\r\n ", " ").replace("\n ", " ");
    head.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
}

/// The message with quoted-printable decoded (soft breaks joined, `=XX`
/// turned back into bytes).
fn quoted_printable(m: &str) -> String {
    let joined = m.replace("=\r\n", "").replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'=', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn one_mail_per_evaluation_multipart_with_proper_headers() {
    let smtp = SmtpSink::start();
    let (rules, config) = rules(&format!(
        "alerter:\n  rules:\n    - {{name: big_talker, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 5e8}}\n    - {{name: '<b>x</b>', task_name: per_src_ip, metric: bytes, operator: '>', threshold: 5e8}}\n  notifiers:\n    - {{name: ops_mail, type: email}}\nsmtp: {{host: 127.0.0.1, port: {}, from: 'NetSpectra <ns@example.org>', to: 'oncall@example.org, sre@example.org', tls: none}}\n",
        smtp.port()
    ));
    let d = Dispatcher::start(&rules, &config.smtp, FAST).unwrap();
    d.outbox().send(vec![
        notice("big_talker", "10.0.0.1", "firing"),
        notice("<b>x</b>", "10.0.0.2", "resolved"),
    ]);
    assert!(d.flush(Duration::from_secs(20)));
    assert_eq!(d.stats().sent.load(Ordering::Relaxed), 1);
    let mail = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mail.len(), 1, "one mail for the whole evaluation");
    let m = &mail[0];
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("NetSpectra: 1 firing, 1 resolved")
    );
    assert_eq!(header(m, "MIME-Version").as_deref(), Some("1.0"));
    assert!(
        header(m, "Date").is_some_and(|d| d.contains("GMT") || d.contains("+0000")),
        "{m}"
    );
    assert!(
        header(m, "Message-ID").is_some_and(|id| id.starts_with('<') && id.contains('@')),
        "{m}"
    );
    assert!(header(m, "From").is_some_and(|f| f.contains("ns@example.org")));
    let to = header(m, "To").unwrap();
    assert!(
        to.contains("oncall@example.org") && to.contains("sre@example.org"),
        "{to}"
    );
    assert!(header(m, "Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")));
    assert!(m.contains("text/plain") && m.contains("text/html"), "{m}");
    let body = quoted_printable(m);
    assert!(
        body.contains("FIRING big_talker {SrcIP=10.0.0.1} bytes=612000000 > 500000000"),
        "{body}"
    );
    let html = &body[body.find("text/html").unwrap()..];
    assert!(
        !html.contains("<b>x</b>"),
        "values are escaped in the HTML part: {html}"
    );
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
    d.finish(Duration::from_secs(1));
}

#[test]
fn webhooks_post_the_alert_json_or_slack_text_and_retry_a_failing_receiver() {
    let json = WebhookReceiver::start();
    let slack = WebhookReceiver::start();
    let (rules, config) = rules(&format!(
        "alerter:\n  rules:\n    - {{name: big_talker, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 5e8}}\n    - {{name: only_chat, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 5e8, notifiers: [chat]}}\n  notifiers:\n    - {{name: hook, type: webhook, url: '{}'}}\n    - {{name: chat, type: webhook, url: '{}', format: slack}}\n",
        json.url(),
        slack.url()
    ));
    // The JSON receiver fails at first: the dispatcher retries.
    json.answer_with(500);
    let d = Dispatcher::start(&rules, &config.smtp, FAST).unwrap();
    d.outbox().send(vec![
        notice("big_talker", "10.0.0.1", "firing"),
        notice("only_chat", "10.0.0.3", "firing"),
    ]);
    std::thread::sleep(Duration::from_millis(30));
    json.answer_with(200);
    assert!(d.flush(Duration::from_secs(20)));
    let bodies = json.wait_for(1, Duration::from_secs(5));
    assert_eq!(bodies.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "only the rules routed to it: {body}");
    assert_eq!(
        alerts[0],
        serde_json::json!({"rule":"big_talker","task":"per_src_ip","key":{"SrcIP":"10.0.0.1"},"metric":"bytes",
            "value":612000000,"operator":">","threshold":500000000,"severity":"warning","state":"firing",
            "window_start":"2026-01-01T00:00:00Z","starts_at":"2026-01-01T00:01:00Z","ends_at":null,"analysis":null})
    );
    let chat = slack.wait_for(1, Duration::from_secs(5));
    let text: serde_json::Value = serde_json::from_str(&chat[0]).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(
        text.starts_with("*NetSpectra: 2 firing, 0 resolved*"),
        "{text}"
    );
    assert!(text.contains("FIRING only_chat {SrcIP=10.0.0.3}"), "{text}");
    assert_eq!(d.stats().sent.load(Ordering::Relaxed), 2);
    assert_eq!(d.stats().failed.load(Ordering::Relaxed), 0);
    d.finish(Duration::from_secs(1));
}

#[test]
fn a_dead_receiver_is_given_up_and_counted_without_blocking_the_sender() {
    let dead_smtp = netspectra_testkit::free_port();
    let (rules, config) = rules(&format!(
        "alerter:\n  rules:\n    - {{name: r, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 1}}\n  notifiers:\n    - {{name: mail, type: email}}\n    - {{name: hook, type: webhook, url: 'http://127.0.0.1:{}/x'}}\nsmtp: {{host: 127.0.0.1, port: {dead_smtp}, to: a@example.org, tls: none}}\n",
        netspectra_testkit::free_port()
    ));
    let d = Dispatcher::start(&rules, &config.smtp, FAST).unwrap();
    let outbox = d.outbox();
    let started = Instant::now();
    for _ in 0..50 {
        outbox.send(vec![notice("r", "10.0.0.1", "firing")]);
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "queuing never waits on a receiver"
    );
    assert!(d.flush(Duration::from_secs(30)));
    // Each group: both notifiers fail. After the first full retry series a
    // notifier is tried once per group until it answers again.
    assert_eq!(d.stats().failed.load(Ordering::Relaxed), 100);
    assert_eq!(d.stats().sent.load(Ordering::Relaxed), 0);
    drop(outbox);
    d.finish(Duration::from_secs(1));
}
