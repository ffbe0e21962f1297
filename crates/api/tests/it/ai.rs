//! The AI gateway's gRPC faces over real gRPC on loopback, with a
//! scripted analyst whose every answer is known here: Go2NetSpectra's
//! `v1.AIService` (the reference's framing, chunks in order), our
//! `AnalystService` (tool calls, deltas, done; structured alerts intact),
//! the token, the status codes, the bound on answers in progress and their
//! deadline, health and reflection, and [`RemoteAnalyst`] as the client
//! an alerter uses.

use netspectra_api::ai_grpc::{serve_ai, AiLimits, AiServeOptions, RemoteAnalyst};
use netspectra_api::analyst::{Analyst, AskEvent, BoxFuture, ToolCall};
use netspectra_api::go2netspectra::ai_service_client::AiServiceClient;
use netspectra_api::go2netspectra::{AnalyzePromptRequest, AnalyzeTrafficRequest};
use netspectra_api::pb::analyst_service_client::AnalystServiceClient;
use netspectra_api::pb::ask_event::Event;
use netspectra_api::{pb, Running, ServeError};
use netspectra_model::alert::AlertRecord;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;

use crate::suite::{reflected_services, req};

const TOKEN: &str = "s3cret";

/// Answers `q` with one `top` call and the text `Answer to «q».` in three
/// deltas; `fail` fails after one delta; `slow` never answers; `whole`
/// reports only the whole answer. Alerts: one line per alert naming its
/// rule, key and value.
struct Scripted;

fn call() -> ToolCall {
    ToolCall {
        name: "top".into(),
        arguments: json!({"task": "per_src_ip", "by": "bytes", "limit": 1}),
    }
}

fn pieces(q: &str) -> Vec<String> {
    vec!["Answer to «".into(), q.to_string(), "».".into()]
}

impl Analyst for Scripted {
    fn ask(&self, question: String) -> mpsc::Receiver<AskEvent> {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            match question.as_str() {
                "slow" => tx.closed().await,
                "fail" => {
                    let _ = tx.send(AskEvent::Delta("Partial".into())).await;
                    let _ = tx
                        .send(AskEvent::Failed("model unreachable: 502".into()))
                        .await;
                }
                "whole" => {
                    let _ = tx
                        .send(AskEvent::Done {
                            answer: "all at once".into(),
                            tool_calls: vec![],
                        })
                        .await;
                }
                _ => {
                    let _ = tx.send(AskEvent::ToolCall(call())).await;
                    for p in pieces(&question) {
                        let _ = tx.send(AskEvent::Delta(p)).await;
                    }
                    let _ = tx
                        .send(AskEvent::Done {
                            answer: pieces(&question).concat(),
                            tool_calls: vec![call()],
                        })
                        .await;
                }
            }
        });
        rx
    }

    fn analyse_alerts(&self, alerts: Vec<AlertRecord>) -> BoxFuture<Result<String, String>> {
        Box::pin(async move {
            if alerts.iter().any(|a| a.rule == "broken") {
                return Err("model unreachable: 502".into());
            }
            Ok(alerts
                .iter()
                .map(|a| format!("- {} {} {}={}", a.rule, a.key, a.metric, a.value))
                .collect::<Vec<_>>()
                .join("\n"))
        })
    }

    fn model(&self) -> Option<String> {
        Some("scripted-1".into())
    }
}

fn alert(rule: &str, key: &str, value: f64) -> AlertRecord {
    AlertRecord {
        rule: rule.into(),
        task: "per_src_ip_spread".into(),
        key: key.into(),
        metric: "distinct".into(),
        value,
        operator: ">".into(),
        threshold: 5000.0,
        severity: "critical".into(),
        state: "firing".into(),
        window_start_ns: 1_700_000_000_000_000_000,
        starts_at_ns: 1_700_000_060_000_000_000,
        ends_at_ns: None,
        analysis: None,
    }
}

async fn start(limits: AiLimits) -> Running {
    serve_ai(
        Arc::new(Scripted),
        AiServeOptions {
            grpc: "127.0.0.1:0".parse().unwrap(),
            token: Some(TOKEN.into()),
            insecure_no_auth: false,
            limits,
            health: None,
        },
    )
    .await
    .unwrap()
}

async fn channel(running: &Running) -> Channel {
    Channel::from_shared(format!("http://{}", running.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Every event of one `Ask`, or the status it ended with.
async fn ask(
    client: &mut AnalystServiceClient<Channel>,
    question: &str,
) -> Result<Vec<Event>, tonic::Status> {
    let mut stream = client
        .ask(req(
            pb::AskRequest {
                question: question.into(),
            },
            Some(TOKEN),
        ))
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await? {
        events.push(e.event.unwrap());
    }
    Ok(events)
}

/// Every chunk of one `AnalyzePromptStream`, and the status it ended with.
async fn chunks(
    client: &mut AiServiceClient<Channel>,
    prompt: &str,
) -> (Vec<String>, Result<(), tonic::Status>) {
    let mut out = Vec::new();
    let mut stream = match client
        .analyze_prompt_stream(req(
            AnalyzePromptRequest {
                prompt: prompt.into(),
            },
            Some(TOKEN),
        ))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => return (out, Err(e)),
    };
    loop {
        match stream.message().await {
            Ok(Some(c)) => out.push(c.chunk),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_ai_service_answers_as_it_did() {
    let running = start(AiLimits::default()).await;
    let mut ai = AiServiceClient::new(channel(&running).await);

    let refused = ai
        .analyze_traffic(req(
            AnalyzeTrafficRequest {
                text_input: "x".into(),
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let alert_html =
        "<h3>Alert: scanner</h3><ul><li><b>Task:</b> <code>ss_src_dst</code></li></ul>";
    let answer = ai
        .analyze_traffic(req(
            AnalyzeTrafficRequest {
                text_input: alert_html.into(),
            },
            Some(TOKEN),
        ))
        .await
        .unwrap()
        .into_inner()
        .text_output;
    // The reference's framing, word for word around the alert data.
    let framed = format!(
        "You are a senior network security analyst. Please analyze the following network alert \
         summary from the Go2NetSpectra monitoring system. Provide a concise analysis of the \
         potential threat, its severity, and recommended next steps for investigation. The output \
         should be clear and actionable.\n\n--- Alert Data ---\n{alert_html}\n--- End of Alert Data ---"
    );
    assert_eq!(answer, pieces(&framed).concat());

    for empty in ["", "  \n"] {
        let e = ai
            .analyze_traffic(req(
                AnalyzeTrafficRequest {
                    text_input: empty.into(),
                },
                Some(TOKEN),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    let failed = ai
        .analyze_traffic(req(
            AnalyzeTrafficRequest {
                text_input: "fail".into(),
            },
            Some(TOKEN),
        ))
        .await;
    // Framed, "fail" is not the scripted failure: it answers.
    assert!(failed.is_ok());

    // One chunk per delta, in order.
    let (got, end) = chunks(&mut ai, "who talks most?").await;
    end.unwrap();
    assert_eq!(got, pieces("who talks most?"));
    // The text so far, then UNAVAILABLE with the analyst's message.
    let (got, end) = chunks(&mut ai, "fail").await;
    assert_eq!(got, ["Partial"]);
    let e = end.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("model unreachable: 502"), "{e:?}");
    // An analyst that reports only the whole answer: one chunk.
    let (got, end) = chunks(&mut ai, "whole").await;
    end.unwrap();
    assert_eq!(got, ["all at once"]);
    let (_, end) = chunks(&mut ai, " ").await;
    assert_eq!(end.unwrap_err().code(), Code::InvalidArgument);

    running.stop();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analyst_service_streams_tool_calls_then_done_and_analyses_alerts() {
    let running = start(AiLimits::default()).await;
    let mut client = AnalystServiceClient::new(channel(&running).await);

    let events = ask(&mut client, "who talks most?").await.unwrap();
    let tool = pb::ToolCall {
        name: "top".into(),
        arguments_json: call().arguments.to_string(),
    };
    let mut want = vec![Event::ToolCall(tool.clone())];
    want.extend(
        pieces("who talks most?")
            .into_iter()
            .map(|text| Event::Delta(pb::ask_event::Delta { text })),
    );
    want.push(Event::Done(pb::ask_event::Done {
        answer: pieces("who talks most?").concat(),
        tool_calls: vec![tool],
    }));
    assert_eq!(events, want);

    // A failing analyst: the text so far, then one `error` event.
    let events = ask(&mut client, "fail").await.unwrap();
    assert_eq!(
        events,
        [
            Event::Delta(pb::ask_event::Delta {
                text: "Partial".into()
            }),
            Event::Error(pb::ask_event::Error {
                message: "model unreachable: 502".into()
            })
        ]
    );
    assert_eq!(
        ask(&mut client, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let refused = client
        .ask(req(
            pb::AskRequest {
                question: "q".into(),
            },
            Some("wrong"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Structured alerts arrive intact: the analysis names each key.
    let alerts = [
        alert("scanner", r#"{"SrcIP":"192.0.2.66"}"#, 50213.0),
        alert("big", r#"{"DstPort":443,"SrcIP":"10.0.0.1"}"#, 7.5),
    ];
    let answer = client
        .analyze_alert(req(
            pb::AnalyzeAlertRequest {
                alerts: alerts
                    .iter()
                    .map(netspectra_api::ai_grpc::alerts::to_pb)
                    .collect(),
            },
            Some(TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.analysis,
        "- scanner {\"SrcIP\":\"192.0.2.66\"} distinct=50213\n- big {\"DstPort\":443,\"SrcIP\":\"10.0.0.1\"} distinct=7.5"
    );
    assert_eq!(answer.model, "scripted-1");
    let e = client
        .analyze_alert(req(pb::AnalyzeAlertRequest { alerts: vec![] }, Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .analyze_alert(req(
            pb::AnalyzeAlertRequest {
                alerts: vec![netspectra_api::ai_grpc::alerts::to_pb(&alert(
                    "broken", "{}", 1.0,
                ))],
            },
            Some(TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("model unreachable: 502"), "{e:?}");

    running.stop();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_progress_are_bounded_in_number_and_time() {
    let running = start(AiLimits {
        max_in_flight: 1,
        answer_timeout: Duration::from_millis(1500),
        max_request_bytes: 1024,
    })
    .await;
    let ch = channel(&running).await;
    let mut client = AnalystServiceClient::new(ch.clone());
    let mut ai = AiServiceClient::new(ch);

    // A slow answer holds the only slot…
    let slow = {
        let mut c = client.clone();
        tokio::spawn(async move { ask(&mut c, "slow").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // … so the next question is refused at once, on either service.
    let shed = ask(&mut client, "q").await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    let shed = ai
        .analyze_traffic(req(
            AnalyzeTrafficRequest {
                text_input: "x".into(),
            },
            Some(TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    // The slow one ends at the deadline, which frees the slot.
    let e = slow.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(ask(&mut client, "q").await.is_ok());

    // Requests larger than the bound are refused before any work.
    let big = ask(&mut client, &"x".repeat(4096)).await.unwrap_err();
    assert_eq!(big.code(), Code::OutOfRange, "{big:?}");

    running.stop();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_the_safe_default() {
    let running = start(AiLimits::default()).await;
    let ch = channel(&running).await;
    let status = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "netspectra.v1.AnalystService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut names = reflected_services(ch, Some(TOKEN)).await.unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.reflection.v1.ServerReflection",
            "netspectra.v1.AnalystService",
            "v1.AIService"
        ]
    );
    running.stop();
    running.wait().await.unwrap();

    // No token on a non-loopback address: refused, as for the query API.
    let open = serve_ai(
        Arc::new(Scripted),
        AiServeOptions {
            grpc: "0.0.0.0:0".parse().unwrap(),
            token: None,
            insecure_no_auth: false,
            limits: AiLimits::default(),
            health: None,
        },
    )
    .await;
    assert!(matches!(open, Err(ServeError::OpenToNetwork { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_analyst_answers_like_the_one_it_asks() {
    let running = start(AiLimits::default()).await;
    let addr = running.grpc_addr.unwrap().to_string();
    let remote = RemoteAnalyst::connect(&addr, Some(TOKEN)).unwrap();

    let collect = |mut rx: mpsc::Receiver<AskEvent>| async move {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e);
        }
        out
    };
    let here = collect(Scripted.ask("who talks most?".into())).await;
    let there = collect(remote.ask("who talks most?".into())).await;
    assert_eq!(there, here);
    assert_eq!(
        collect(remote.ask("fail".into())).await,
        collect(Scripted.ask("fail".into())).await
    );

    assert_eq!(remote.model(), None, "no analysis yet");
    let alerts = vec![alert("scanner", r#"{"SrcIP":"192.0.2.66"}"#, 50213.0)];
    assert_eq!(
        remote.analyse_alerts(alerts.clone()).await,
        Scripted.analyse_alerts(alerts.clone()).await
    );
    assert_eq!(remote.model().as_deref(), Some("scripted-1"));

    // A wrong token and an unreachable gateway fail with a message naming
    // the gateway, never hang.
    let wrong = RemoteAnalyst::connect(&format!("http://{addr}"), Some("wrong")).unwrap();
    let events = collect(wrong.ask("q".into())).await;
    let [AskEvent::Failed(m)] = &events[..] else {
        panic!("{events:?}");
    };
    assert!(m.contains(&addr) && m.contains("Unauthenticated"), "{m}");
    let err = wrong.analyse_alerts(alerts.clone()).await.unwrap_err();
    assert!(err.contains("Unauthenticated"), "{err}");
    running.stop();
    running.wait().await.unwrap();
    let gone = RemoteAnalyst::connect(&addr, Some(TOKEN)).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), gone.analyse_alerts(alerts))
        .await
        .expect("a stopped gateway fails fast")
        .unwrap_err();
    assert!(err.contains(&addr), "{err}");
    assert!(RemoteAnalyst::connect("not an address", None).is_err());
}
