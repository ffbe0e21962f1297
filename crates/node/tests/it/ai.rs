//! The AI gateway role over a store the analysis role wrote, asked over
//! real gRPC: the reference's `AIService` answers (whole and streamed) and
//! our `AnalystService` streams its tool calls then `done`, all naming the
//! generator's top source (the offline analyst reads the real numbers), a
//! token is required when set, and the listener closes on shutdown.

use netspectra_api::ai_grpc::{AiLimits, AiServeOptions};
use netspectra_api::go2netspectra::ai_service_client::AiServiceClient;
use netspectra_api::go2netspectra::{AnalyzePromptRequest, AnalyzeTrafficRequest};
use netspectra_api::pb;
use netspectra_api::pb::analyst_service_client::AnalystServiceClient;
use netspectra_api::pb::ask_event::Event;
use netspectra_model::config::AiConfig;
use netspectra_node::ai::{AiGateway, AiGatewayConfig};
use netspectra_node::Shutdown;
use netspectra_store::StoreUrl;
use std::net::TcpStream;

const TOKEN: &str = "s3cret";

fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[test]
fn the_ai_role_answers_from_the_store_over_both_services_until_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let (url, truth) = crate::stored_capture(dir.path(), 5_000, 7);
    // The truth's top source by bytes, and that it is the only one.
    let mut by_bytes: Vec<_> = truth.per_src.iter().collect();
    by_bytes.sort_by_key(|(_, s)| std::cmp::Reverse(s.bytes));
    assert!(
        by_bytes[0].1.bytes > by_bytes[1].1.bytes,
        "a clear top source"
    );
    let top = by_bytes[0].0.clone();
    // The generator's first packet: 2026-01-01T00:00:00Z.
    let first_packet_ns: u64 = 1_767_225_600 * 1_000_000_000;

    let mut config = AiGatewayConfig::loopback(StoreUrl::parse(&url).unwrap(), AiConfig::default());
    config.options = AiServeOptions {
        token: Some(TOKEN.into()),
        limits: AiLimits::default(),
        ..config.options
    };
    let gateway = AiGateway::start(config).unwrap();
    assert_eq!(
        gateway.model, None,
        "no model configured: the offline analyst"
    );
    assert!(
        gateway.describe().contains("offline"),
        "{}",
        gateway.describe()
    );
    let addr = gateway.grpc_addr;
    let shutdown = Shutdown::new();
    let serving = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || gateway.serve_until(&shutdown))
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = format!("http://{addr}");
        let mut ai = AiServiceClient::connect(endpoint.clone()).await.unwrap();
        let mut analyst = AnalystServiceClient::connect(endpoint).await.unwrap();

        // The token is required.
        let refused = ai
            .analyze_traffic(req(
                AnalyzeTrafficRequest {
                    text_input: "x".into(),
                },
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);

        // The reference's unary answer names the top source.
        let text = ai
            .analyze_traffic(req(
                AnalyzeTrafficRequest {
                    text_input: "<h3>Alert: Total_Traffic_Spike</h3>".into(),
                },
                Some(TOKEN),
            ))
            .await
            .unwrap()
            .into_inner()
            .text_output;
        assert!(text.contains(&top), "{top} missing from {text}");

        // Streamed, in several chunks, the same way.
        let mut stream = ai
            .analyze_prompt_stream(req(
                AnalyzePromptRequest {
                    prompt: "Who are the top talkers?".into(),
                },
                Some(TOKEN),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut chunks = Vec::new();
        while let Some(c) = stream.message().await.unwrap() {
            chunks.push(c.chunk);
        }
        assert!(!chunks.is_empty());
        assert!(chunks.concat().contains(&top), "{chunks:?}");

        // Ours: tool calls first, then done carrying the same calls.
        let mut stream = analyst
            .ask(req(
                pb::AskRequest {
                    question: "Who sends the most bytes?".into(),
                },
                Some(TOKEN),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(e) = stream.message().await.unwrap() {
            events.push(e.event.unwrap());
        }
        let calls: Vec<pb::ToolCall> = events
            .iter()
            .filter_map(|e| match e {
                Event::ToolCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert!(!calls.is_empty(), "{events:?}");
        assert!(matches!(events[0], Event::ToolCall(_)), "{events:?}");
        let Some(Event::Done(done)) = events.last() else {
            panic!("no done: {events:?}");
        };
        assert_eq!(done.tool_calls, calls);
        assert!(
            done.answer.contains(&top),
            "{top} missing from {}",
            done.answer
        );
        let deltas: String = events
            .iter()
            .filter_map(|e| match e {
                Event::Delta(d) => Some(d.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, done.answer);
        for c in &calls {
            let args: serde_json::Value = serde_json::from_str(&c.arguments_json).unwrap();
            assert!(args.is_object(), "{c:?}");
        }

        // An alert on the top source, in the capture's window: analysed
        // from the store (the source's packets, as the truth counts them).
        let alert = netspectra_api::ai_grpc::alerts::to_pb(&netspectra_model::alert::AlertRecord {
            rule: "big_talker".into(),
            task: "per_src_ip".into(),
            key: serde_json::json!({"SrcIP": top}).to_string(),
            metric: "bytes".into(),
            value: truth.per_src[&top].bytes as f64,
            operator: ">".into(),
            threshold: 1.0,
            severity: "warning".into(),
            state: "firing".into(),
            window_start_ns: first_packet_ns,
            starts_at_ns: first_packet_ns,
            ends_at_ns: None,
            analysis: None,
        });
        let answer = analyst
            .analyze_alert(req(
                pb::AnalyzeAlertRequest {
                    alerts: vec![alert],
                },
                Some(TOKEN),
            ))
            .await
            .unwrap()
            .into_inner();
        let packets = netspectra_model::thousands(truth.per_src[&top].packets);
        assert!(
            answer.analysis.contains(&format!(" in {packets} packets")),
            "{packets} packets of {top} in {}",
            answer.analysis
        );
        assert_eq!(answer.model, "");
    });

    shutdown.trigger();
    serving.join().unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after the stop"
    );
}

#[test]
fn a_store_that_cannot_be_opened_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::parse(&format!(
        "sqlite:{}",
        dir.path().join("missing/dir/ns.db").display()
    ))
    .unwrap();
    let err = AiGateway::start(AiGatewayConfig::loopback(url, AiConfig::default()))
        .err()
        .expect("refused");
    assert!(!err.to_string().is_empty());
}
