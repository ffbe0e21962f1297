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

mod enrichment {
    //! `alerter.ai_analysis`: each group is analysed once before it is
    //! sent; the answer reaches the mail (rendered, sanitised) and the
    //! webhook; a failing, panicking or hanging analysis costs the
    //! analysis, never the notification.

    use super::*;
    use netspectra_alert::notify::{AnalysisFuture, Enrichment};
    use std::sync::{Arc, Mutex};

    /// What the model might say: Markdown with hostile HTML in it.
    const ANSWER: &str = "**10.0.0.1** sent `612 MB` to one host.\n\n\
        - likely a backup <script>alert(1)</script>\n\
        - <img src=x onerror=alert(2)>\n\n\
        [details](javascript:alert(3)) and [runbook](https://example.org/rb)\n";

    /// An analysis scripted by `answer`, recording each call's alerts.
    fn scripted(
        answer: impl Fn() -> AnalysisFuture + Send + Sync + 'static,
    ) -> (Enrichment, Arc<Mutex<Vec<Vec<AlertRecord>>>>) {
        let calls: Arc<Mutex<Vec<Vec<AlertRecord>>>> = Arc::default();
        let seen = calls.clone();
        let analysis = move |alerts: Vec<AlertRecord>| {
            seen.lock().unwrap().push(alerts);
            answer()
        };
        (
            Enrichment::new(Arc::new(analysis), Duration::from_millis(800)),
            calls,
        )
    }

    /// Rules sending to a mail sink and a JSON webhook.
    fn mail_and_hook(smtp: &SmtpSink, hook: &WebhookReceiver) -> (Rules, Config) {
        rules(&format!(
            "alerter:\n  ai_analysis: {{enabled: true, timeout: 800ms}}\n  rules:\n    - {{name: big_talker, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 5e8}}\n  notifiers:\n    - {{name: mail, type: email}}\n    - {{name: hook, type: webhook, url: '{}'}}\nsmtp: {{host: 127.0.0.1, port: {}, to: oncall@example.org, tls: none}}\n",
            hook.url(),
            smtp.port()
        ))
    }

    fn html_part(mail: &str) -> String {
        let body = quoted_printable(mail);
        let start = body.find("text/html").expect("an HTML part");
        body[start..].to_string()
    }

    fn text_part(mail: &str) -> String {
        let body = quoted_printable(mail);
        let start = body.find("text/plain").expect("a text part");
        let end = body.find("text/html").unwrap_or(body.len());
        body[start..end].to_string()
    }

    fn webhook_analyses(body: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["analysis"].clone())
            .collect()
    }

    #[test]
    fn the_analysis_reaches_the_mail_rendered_and_sanitised_and_the_webhook() {
        let smtp = SmtpSink::start();
        let hook = WebhookReceiver::start();
        let (rules, config) = mail_and_hook(&smtp, &hook);
        let (enrichment, calls) = scripted(|| Box::pin(async { Ok(ANSWER.to_string()) }));
        let d = Dispatcher::start_with(&rules, &config.smtp, FAST, Some(enrichment)).unwrap();
        d.outbox().send(vec![
            notice("big_talker", "10.0.0.1", "firing"),
            notice("big_talker", "10.0.0.2", "resolved"),
        ]);
        assert!(d.flush(Duration::from_secs(20)));
        // One analysis for the group, over its structured alerts.
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1, "one analysis per group");
        assert_eq!(calls[0].len(), 2);
        assert_eq!(calls[0][0].key, r#"{"SrcIP":"10.0.0.1"}"#);
        assert_eq!(calls[0][1].state, "resolved");
        assert_eq!(d.stats().analysed.load(Ordering::Relaxed), 1);
        assert_eq!(d.stats().sent.load(Ordering::Relaxed), 2);

        let mail = smtp.wait_for(1, Duration::from_secs(10));
        let html = html_part(&mail[0]);
        assert_eq!(html.matches("<h3>Analysis</h3>").count(), 1, "{html}");
        assert!(html.contains("<strong>10.0.0.1</strong>"), "{html}");
        assert!(html.contains("<code>612 MB</code>"), "{html}");
        assert!(html.contains("<li>likely a backup"), "{html}");
        assert!(
            html.contains(
                r#"<a href="https://example.org/rb" rel="noopener noreferrer">runbook</a>"#
            ),
            "{html}"
        );
        let lower = html.to_ascii_lowercase();
        for bad in ["<script", "alert(1)", "<img", "onerror=", "javascript:"] {
            assert!(!lower.contains(bad), "`{bad}` reached the mail: {html}");
        }
        // The text part carries the Markdown as the model wrote it.
        let text = text_part(&mail[0]);
        assert!(text.contains("**10.0.0.1** sent `612 MB`"), "{text}");

        let bodies = hook.wait_for(1, Duration::from_secs(5));
        assert_eq!(
            webhook_analyses(&bodies[0]),
            vec![serde_json::json!(ANSWER); 2],
            "every alert of the group carries the analysis"
        );
        d.finish(Duration::from_secs(1));
    }

    /// Sends one group through `enrichment` and checks it arrives, without
    /// analysis, by mail and webhook within `within`.
    fn delivered_without_analysis(enrichment: Enrichment, within: Duration) -> DispatchCounts {
        let smtp = SmtpSink::start();
        let hook = WebhookReceiver::start();
        let (rules, config) = mail_and_hook(&smtp, &hook);
        let d = Dispatcher::start_with(&rules, &config.smtp, FAST, Some(enrichment)).unwrap();
        let started = Instant::now();
        d.outbox()
            .send(vec![notice("big_talker", "10.0.0.1", "firing")]);
        let mail = smtp.wait_for(1, within);
        let bodies = hook.wait_for(1, within);
        let took = started.elapsed();
        assert_eq!(mail.len(), 1, "the mail went out");
        assert_eq!(bodies.len(), 1, "the webhook was called");
        assert!(took < within, "delivered after {took:?}");
        assert!(!html_part(&mail[0]).contains("Analysis"), "{}", mail[0]);
        assert!(!text_part(&mail[0]).contains("Analysis"), "{}", mail[0]);
        assert_eq!(webhook_analyses(&bodies[0]), vec![serde_json::Value::Null]);
        assert!(d.flush(Duration::from_secs(5)));
        let counts = DispatchCounts {
            sent: d.stats().sent.load(Ordering::Relaxed),
            analysed: d.stats().analysed.load(Ordering::Relaxed),
            analysis_failed: d.stats().analysis_failed.load(Ordering::Relaxed),
            took,
        };
        d.finish(Duration::from_secs(1));
        counts
    }

    struct DispatchCounts {
        sent: u64,
        analysed: u64,
        analysis_failed: u64,
        took: Duration,
    }

    #[test]
    fn a_failing_empty_or_panicking_analysis_still_sends_the_notification() {
        type Answer = fn() -> AnalysisFuture;
        let answers: [Answer; 3] = [
            || Box::pin(async { Err("the model answered 503".to_string()) }),
            || Box::pin(async { Ok("  \n".to_string()) }),
            || Box::pin(async { panic!("the analyst broke") }),
        ];
        for answer in answers {
            let (enrichment, calls) = scripted(answer);
            let c = delivered_without_analysis(enrichment, Duration::from_secs(10));
            assert_eq!(calls.lock().unwrap().len(), 1);
            assert_eq!((c.sent, c.analysed, c.analysis_failed), (2, 0, 1));
        }
    }

    #[test]
    fn a_hanging_analysis_is_cut_at_its_timeout_and_the_notification_sent() {
        // Never answers (a stalled model); the timeout is 800 ms.
        let (enrichment, calls) = scripted(|| Box::pin(std::future::pending()));
        let timeout = enrichment.timeout;
        let c = delivered_without_analysis(enrichment, timeout + Duration::from_secs(4));
        assert!(c.took >= timeout, "waited for the analysis: {:?}", c.took);
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert_eq!((c.sent, c.analysed, c.analysis_failed), (2, 0, 1));
    }

    /// A dispatcher to a JSON webhook whose analysis never answers (a
    /// stalled model, 800 ms timeout), and the analysis' calls.
    fn stalled_to_a_hook() -> (
        WebhookReceiver,
        Dispatcher,
        Arc<Mutex<Vec<Vec<AlertRecord>>>>,
    ) {
        let hook = WebhookReceiver::start();
        let (rules, config) = rules(&format!(
            "alerter:\n  rules:\n    - {{name: big_talker, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 1}}\n  notifiers:\n    - {{name: hook, type: webhook, url: '{}'}}\n",
            hook.url()
        ));
        let (enrichment, calls) = scripted(|| Box::pin(std::future::pending()));
        let d = Dispatcher::start_with(&rules, &config.smtp, FAST, Some(enrichment)).unwrap();
        (hook, d, calls)
    }

    #[test]
    fn a_queue_far_behind_goes_out_without_analysis() {
        // A stalled model (800 ms timeout) and 12 groups at once: waiting
        // for every analysis would take ~10 s; past 8 queued groups they
        // go out without, so all arrive soon, most unexplained.
        let (hook, d, calls) = stalled_to_a_hook();
        let started = std::time::Instant::now();
        for i in 0..12 {
            d.outbox()
                .send(vec![notice("big_talker", &format!("10.0.0.{i}"), "firing")]);
        }
        assert_eq!(hook.wait_for(12, Duration::from_secs(8)).len(), 12);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        let analysed = calls.lock().unwrap().len();
        assert!((1..12).contains(&analysed), "{analysed} analyses tried");
        assert_eq!(
            d.stats()
                .analysis_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            12
        );
        d.finish(Duration::from_secs(1));
    }

    #[test]
    fn a_flush_stops_waiting_for_analyses_half_way() {
        // Three groups behind a stalled model (800 ms each): a 2 s flush
        // waits 1 s for analyses, then sends the rest without.
        let (hook, d, calls) = stalled_to_a_hook();
        for i in 0..4 {
            d.outbox()
                .send(vec![notice("big_talker", &format!("10.0.1.{i}"), "firing")]);
        }
        assert!(
            d.flush(Duration::from_secs(2)),
            "emptied within the deadline"
        );
        assert_eq!(hook.bodies().len(), 4);
        assert!(calls.lock().unwrap().len() < 4, "not every group waited");
        d.finish(Duration::from_secs(1));
    }

    #[test]
    fn groups_no_notifier_receives_are_not_analysed() {
        let (rules, config) = rules(
            "alerter:\n  rules:\n    - {name: quiet, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 1, notifiers: []}\n",
        );
        let (enrichment, calls) = scripted(|| Box::pin(async { Ok("x".to_string()) }));
        let d = Dispatcher::start_with(&rules, &config.smtp, FAST, Some(enrichment)).unwrap();
        d.outbox().send(vec![notice("quiet", "10.0.0.1", "firing")]);
        assert!(d.flush(Duration::from_secs(5)));
        assert!(calls.lock().unwrap().is_empty());
        d.finish(Duration::from_secs(1));
    }
}
