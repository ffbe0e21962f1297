//! The AI analyst over a real store: the planted capture
//! (`testkit::planted`: big talkers, a scanner, alerts) analysed into
//! SQLite, then asked — by the offline analyst, whose findings are checked
//! against the truth computed from the packets written, and by a model
//! served by a real local OpenAI-protocol server, whose tool results must
//! carry the store's true numbers. `POST /api/v1/ask` is read as a real
//! client reads it.

use crate::alerts::{analyze_planted, config};
use netspectra_api::analyst::{Analyst, AskEvent, ToolCall};
use netspectra_api::Limits;
use netspectra_model::config::{AiConfig, DurationText};
use netspectra_node::api::{analyst, ApiConfig, ApiServer};
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use netspectra_testkit::openai::{
    self, completion, error, finish, streamed_text, tool_call_chunks, OpenAiServer, Reply,
};
use netspectra_testkit::planted::Packet;
use netspectra_testkit::webhook::WebhookReceiver;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The planted store, its packets and its URL (the directory kept alive).
fn store() -> (tempfile::TempDir, Vec<Packet>, StoreUrl) {
    let hook = WebhookReceiver::start();
    let (dir, packets, db, _) = analyze_planted(config(&hook.url(), &[]));
    (dir, packets, StoreUrl::Sqlite(db))
}

/// Bytes per source, and the total, from the packets written.
fn bytes_by_source(packets: &[Packet]) -> (Vec<(String, u64)>, u64) {
    let mut by: HashMap<[u8; 4], u64> = HashMap::new();
    for (_, src, _, len) in packets {
        *by.entry(*src).or_default() += u64::from(*len);
    }
    let total = by.values().sum();
    let mut rows: Vec<(String, u64)> = by
        .into_iter()
        .map(|(ip, b)| (std::net::Ipv4Addr::from(ip).to_string(), b))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    (rows, total)
}

/// Distinct destinations per source in the busiest window.
fn max_spread(packets: &[Packet], source: [u8; 4]) -> u64 {
    let mut per_window: HashMap<u64, BTreeSet<[u8; 4]>> = HashMap::new();
    for (t, src, dst, _) in packets {
        if *src == source {
            per_window
                .entry((t - netspectra_testkit::planted::T0) / netspectra_testkit::planted::WINDOW)
                .or_default()
                .insert(*dst);
        }
    }
    per_window.values().map(BTreeSet::len).max().unwrap_or(0) as u64
}

async fn collect(analyst: &Arc<dyn Analyst>, question: &str) -> Vec<AskEvent> {
    let mut rx = analyst.ask(question.into());
    let mut out = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the answer goes on")
    {
        out.push(e);
    }
    out
}

/// The answer of a finished event list and its tool calls; the deltas
/// must add up to the answer.
fn done(events: &[AskEvent]) -> (String, Vec<ToolCall>) {
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            AskEvent::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    match events.last() {
        Some(AskEvent::Done { answer, tool_calls }) => {
            assert_eq!(&deltas, answer, "the deltas are the answer");
            let announced: Vec<ToolCall> = events
                .iter()
                .filter_map(|e| match e {
                    AskEvent::ToolCall(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(&announced, tool_calls, "every call announced as it ran");
            (answer.clone(), tool_calls.clone())
        }
        other => panic!("the answer did not finish: {other:?} in {events:?}"),
    }
}

fn model(server: &OpenAiServer) -> AiConfig {
    AiConfig {
        base_url: server.base_url(),
        model: "test-model".into(),
        timeout: Some(DurationText(5_000_000_000)),
        ..AiConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_analyst_finds_the_planted_scanner_and_the_top_talker() {
    let (_dir, packets, url) = store();
    let a = analyst(&url, &AiConfig::default(), Limits::default()).unwrap();
    assert_eq!(a.model(), None, "no model configured: offline");

    let (answer, calls) = done(&collect(&a, "Who is scanning the network?").await);
    let spread = max_spread(&packets, [10, 8, 0, 1]);
    assert_eq!(spread, 1_500);
    assert!(answer.contains("**10.8.0.1** reached "), "{answer}");
    assert!(answer.contains("typical of a scan"), "{answer}");
    let quoted: u64 = answer
        .split("**10.8.0.1** reached ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap();
    assert!(
        quoted.abs_diff(spread) <= spread / 10,
        "estimate {quoted} vs truth {spread}"
    );
    // The scan paragraph comes first for a question about scanning.
    assert!(
        answer.find("10.8.0.1").unwrap() < answer.find("Top talker").unwrap(),
        "{answer}"
    );

    let (by_source, total) = bytes_by_source(&packets);
    let (top, top_bytes) = &by_source[0];
    assert_eq!(top, "10.9.0.1");
    let share = format!(
        "({:.0} % of traffic)",
        *top_bytes as f64 * 100.0 / total as f64
    );
    assert!(
        answer.contains(&format!("Top talker by bytes: **{top}**")),
        "{answer}"
    );
    assert!(answer.contains(&share), "{share} in {answer}");
    // Every planted instance resolved before the capture ended.
    assert!(
        answer.contains("**Alerts**: 6 recent transitions, none still firing."),
        "{answer}"
    );
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    for tool in [
        "tasks",
        "aggregate",
        "top",
        "super_spreaders",
        "heavy_hitters",
        "alerts",
    ] {
        assert!(names.contains(&tool), "{tool} in {names:?}");
    }

    // About one address: its traffic both ways and its peers.
    let (answer, _) = done(&collect(&a, "what did 10.9.0.1 do?").await);
    assert!(
        answer.starts_with("**10.9.0.1**: as source 450 packets, 450.0 kB"),
        "{answer}"
    );
    assert!(answer.contains("top peers by bytes: "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_tools_sees_the_stores_true_numbers() {
    let (_dir, packets, url) = store();
    let mut first = tool_call_chunks(
        0,
        "call_1",
        "top",
        &json!({"task": "per_src_ip", "by": "bytes", "limit": 3}),
    );
    first.push(finish("tool_calls"));
    let server = OpenAiServer::start(vec![
        Reply::Stream(first),
        streamed_text(&["The top source is ", "10.9.0.1."]),
    ]);
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    assert_eq!(a.model().as_deref(), Some("test-model"));
    let events = collect(&a, "Who sent the most bytes?").await;
    let (answer, calls) = done(&events);
    assert_eq!(answer, "The top source is 10.9.0.1.");
    assert_eq!(
        calls,
        [ToolCall {
            name: "top".into(),
            arguments: json!({"task": "per_src_ip", "by": "bytes", "limit": 3})
        }]
    );

    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body["tools"].as_array().unwrap().len(), 8);
    let messages = got[1].body["messages"].as_array().unwrap();
    let tool_message = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the tool's answer");
    assert_eq!(tool_message["tool_call_id"], "call_1");
    let result: Value = serde_json::from_str(tool_message["content"].as_str().unwrap()).unwrap();
    let (by_source, _) = bytes_by_source(&packets);
    for (i, (ip, bytes)) in by_source.iter().take(3).enumerate() {
        assert_eq!(result["rows"][i]["key"]["SrcIP"], ip.as_str(), "{result}");
        assert_eq!(result["rows"][i]["bytes"], *bytes, "{result}");
    }
    // The assistant turn with its call precedes the tool's answer.
    let assistant = messages.iter().find(|m| m["role"] == "assistant").unwrap();
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "top");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_eight_rounds_of_tool_calls_the_model_must_answer() {
    let (_dir, _packets, url) = store();
    let call = || {
        let mut steps = tool_call_chunks(0, "c", "tasks", &json!({}));
        steps.push(finish("tool_calls"));
        Reply::Stream(steps)
    };
    // Nine turns of calls: eight are run, the ninth is not, and with no
    // text the answer fails saying why.
    let server = OpenAiServer::start((0..9).map(|_| call()).collect());
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    let events = collect(&a, "q").await;
    let calls = events
        .iter()
        .filter(|e| matches!(e, AskEvent::ToolCall(_)))
        .count();
    assert_eq!(calls, 8);
    match events.last() {
        Some(AskEvent::Failed(m)) => assert!(m.contains("after 8 rounds"), "{m}"),
        other => panic!("{other:?}"),
    }
    let got = server.received();
    assert_eq!(got.len(), 9);
    let last = &got[8].body;
    assert_eq!(
        last["tools"].as_array().unwrap().len(),
        8,
        "tools still offered"
    );
    let told = last["messages"].as_array().unwrap().last().unwrap();
    assert!(
        told["content"].as_str().unwrap().contains("answer now"),
        "{told}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tool_call_gets_the_apis_error_and_the_model_goes_on() {
    let (_dir, _packets, url) = store();
    let mut first = tool_call_chunks(0, "c", "top", &json!({"task": "per_src_ip", "rule": "x"}));
    first.push(finish("tool_calls"));
    let server = OpenAiServer::start(vec![Reply::Stream(first), streamed_text(&["sorry"])]);
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    done(&collect(&a, "q").await);
    let messages = server.received()[1].body["messages"].clone();
    let tool = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    let result: Value = serde_json::from_str(tool["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["error"]["code"], "bad_request");
    assert!(result["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not take parameter `rule`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_tools_gets_the_stored_context_in_its_prompt() {
    let (_dir, packets, url) = store();
    let server = OpenAiServer::start(vec![
        error(400, "tools are not supported for this model"),
        streamed_text(&["10.8.0.1 looks like a scanner."]),
    ]);
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    let (answer, calls) = done(&collect(&a, "anything odd?").await);
    assert_eq!(answer, "10.8.0.1 looks like a scanner.");
    assert!(calls.iter().any(|c| c.name == "super_spreaders"));
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].body.get("tools").is_none(),
        "no tools the second time"
    );
    let system = got[1].body["messages"][0]["content"].as_str().unwrap();
    let (by_source, _) = bytes_by_source(&packets);
    assert!(
        system.contains(&by_source[0].0),
        "the top source reaches the model"
    );
    assert!(system.contains("\"super_spreaders\"") && system.contains("10.8.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_ends_the_answer_with_its_reason() {
    let (_dir, _packets, url) = store();
    let server = OpenAiServer::start(vec![error(401, "bad key")]);
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    let events = collect(&a, "q").await;
    match events.last() {
        Some(AskEvent::Failed(m)) => assert!(m.contains("API key"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_analysed_from_their_records_and_the_stored_context() {
    let (_dir, _packets, url) = store();
    let reader = Reader::open(&url).unwrap();
    let alerts = reader
        .alerts(&netspectra_model::alert::AlertFilter {
            rule: Some("scanner".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!alerts.is_empty());

    // Offline: the scanner's own numbers.
    let offline = analyst(&url, &AiConfig::default(), Limits::default()).unwrap();
    let text = offline.analyse_alerts(alerts.clone()).await.unwrap();
    assert!(
        text.contains("**scanner**") && text.contains("typical of a scan"),
        "{text}"
    );
    assert!(text.contains("Top peers by bytes: "), "{text}");

    // A model gets the structured records and the context, never HTML.
    let server = OpenAiServer::start(vec![completion("**Scan** from 10.8.0.1: block it.")]);
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    let text = a.analyse_alerts(alerts.clone()).await.unwrap();
    assert_eq!(text, "**Scan** from 10.8.0.1: block it.");
    let body = &server.received()[0].body;
    assert_eq!(body["stream"], false);
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains(r#""rule":"scanner""#) && prompt.contains("10.8.0.1"),
        "{prompt}"
    );
    assert!(prompt.contains(r#""tool":"timeseries""#), "{prompt}");
    assert!(
        !prompt.contains("<table") && !prompt.contains("<h3>"),
        "{prompt}"
    );

    // A model that fails is an error the alerter can send without.
    let server = OpenAiServer::start(vec![openai::error(400, "context too long")]);
    let a = analyst(&url, &model(&server), Limits::default()).unwrap();
    assert!(a
        .analyse_alerts(alerts)
        .await
        .unwrap_err()
        .contains("context too long"));
}

/// `POST /api/v1/ask` on `api`: status and the SSE events as received.
async fn post_ask(api: &ApiServer, token: Option<&str>, body: &str) -> (u16, Vec<(String, Value)>) {
    let url = format!("http://{}/api/v1/ask", api.http_addr.unwrap());
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let mut answer = netspectra_http::request("POST", &url, &headers, body.as_bytes().to_vec())
        .await
        .unwrap();
    let status = answer.status;
    let mut parser = netspectra_ai::sse::SseParser::default();
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), answer.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        for e in parser.push(&chunk).unwrap() {
            events.push((
                e.event,
                serde_json::from_str(&e.data).unwrap_or(Value::Null),
            ));
        }
        if events
            .iter()
            .any(|(name, _)| name == "done" || name == "error")
        {
            break;
        }
        if status != 200 {
            events.push((
                String::new(),
                serde_json::from_slice(&chunk).unwrap_or(Value::Null),
            ));
            break;
        }
    }
    (status, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_ask_streams_the_answer_behind_the_token() {
    let (_dir, _packets, url) = store();
    let mut config = ApiConfig::loopback(url);
    config.options.token = Some("s3cret".into());
    config.ai = Some(AiConfig::default());
    let api = tokio::task::spawn_blocking(move || ApiServer::start(config).unwrap())
        .await
        .unwrap();

    let (status, _) = post_ask(&api, None, r#"{"question":"who scans?"}"#).await;
    assert_eq!(status, 401);
    let (status, events) = post_ask(&api, Some("s3cret"), r#"{"question":""}"#).await;
    assert_eq!(status, 400, "{events:?}");
    let (status, events) = post_ask(&api, Some("s3cret"), r#"{"q":"x"}"#).await;
    assert_eq!(status, 400, "{events:?}");

    let (status, events) = post_ask(&api, Some("s3cret"), r#"{"question":"who scans?"}"#).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"tool_call"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    let done = &events.last().unwrap().1;
    assert_eq!(done["answer"], text.as_str());
    assert!(
        text.contains("10.8.0.1") && text.contains("typical of a scan"),
        "{text}"
    );
    assert_eq!(
        done["tool_calls"].as_array().unwrap().len(),
        names.iter().filter(|n| **n == "tool_call").count()
    );
    tokio::task::spawn_blocking(move || api.stop().unwrap())
        .await
        .unwrap();
}

/// The planted analysis with `alerter.ai_analysis` on, plus `ai` lines.
fn analyse_with_enrichment(hook: &WebhookReceiver, ai: &str) {
    let yaml = netspectra_testkit::planted::config_yaml(&hook.url(), &[]).replace(
        "alerter:\n",
        "alerter:\n  ai_analysis: {enabled: true, timeout: 20s}\n",
    ) + ai;
    let config = netspectra_model::config::Config::from_yaml(&yaml, &|_| None).unwrap();
    analyze_planted(config);
}

#[test]
fn notifications_carry_the_offline_analysis_of_their_alerts() {
    let hook = WebhookReceiver::start();
    analyse_with_enrichment(&hook, "");
    let alerts = netspectra_testkit::planted::from_bodies(&hook.bodies());
    assert_eq!(alerts.len(), 6, "every transition notified");
    let scanner = alerts
        .iter()
        .find(|a| a.rule == "scanner" && a.state == "firing")
        .unwrap();
    let analysis = scanner.analysis.as_deref().expect("analysed");
    assert!(
        analysis.contains("**scanner**") && analysis.contains("typical of a scan"),
        "{analysis}"
    );
    assert!(
        alerts.iter().all(|a| a.analysis.is_some()),
        "every group analysed"
    );
}

#[test]
fn notifications_carry_the_models_analysis_and_go_without_it_when_it_fails() {
    let server = OpenAiServer::start(vec![]);
    // Every group: one answer; the third group's model call fails.
    server.push(vec![
        completion("first analysis"),
        completion("second analysis"),
        error(500, "down"),
        error(500, "down"),
        error(500, "down"),
        error(500, "down"),
    ]);
    for _ in 0..10 {
        server.push(vec![completion("later analysis")]);
    }
    let hook = WebhookReceiver::start();
    let ai = format!(
        "ai:\n  base_url: {}\n  model: test-model\n  timeout: 5s\n",
        server.base_url()
    );
    analyse_with_enrichment(&hook, &ai);
    let bodies = hook.bodies();
    let groups: Vec<Vec<Value>> = bodies
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["alerts"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    assert!(groups.len() >= 3, "{bodies:?}");
    assert!(
        groups[0].iter().all(|a| a["analysis"] == "first analysis"),
        "{:?}",
        groups[0]
    );
    assert!(groups[1].iter().all(|a| a["analysis"] == "second analysis"));
    assert!(
        groups[2].iter().all(|a| a["analysis"].is_null()),
        "sent without: {:?}",
        groups[2]
    );
    // The model got structured alerts, never the notification's HTML.
    let prompt = server.received()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        prompt.contains("\"rule\":\"big_talker\"") || prompt.contains("\"rule\":\"scanner\""),
        "{prompt}"
    );
}

#[test]
fn notifications_can_be_analysed_by_the_ai_gateway() {
    // A gateway over the planted store (its offline analyst) …
    let (_dir, _packets, url) = store();
    let gateway = netspectra_node::ai::AiGateway::start(
        netspectra_node::ai::AiGatewayConfig::loopback(url, AiConfig::default()),
    )
    .unwrap();
    // … explains the notifications of another run of the same capture.
    let hook = WebhookReceiver::start();
    let yaml = netspectra_testkit::planted::config_yaml(&hook.url(), &[]).replace(
        "alerter:\n",
        &format!(
            "alerter:\n  ai_analysis: {{enabled: true, service_addr: '{}', timeout: 20s}}\n",
            gateway.grpc_addr
        ),
    );
    analyze_planted(netspectra_model::config::Config::from_yaml(&yaml, &|_| None).unwrap());
    let alerts = netspectra_testkit::planted::from_bodies(&hook.bodies());
    assert_eq!(alerts.len(), 6);
    let scanner = alerts
        .iter()
        .find(|a| a.rule == "scanner" && a.state == "firing")
        .unwrap();
    let analysis = scanner
        .analysis
        .as_deref()
        .expect("analysed by the gateway");
    assert!(analysis.contains("typical of a scan"), "{analysis}");
    gateway.stop().unwrap();
}
