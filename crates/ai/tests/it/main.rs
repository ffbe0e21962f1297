//! The model client against a real local HTTP server speaking the OpenAI
//! protocol (`testkit::openai`): JSON and streamed answers, tool calls
//! streamed in pieces, retries of a busy server, a stalled stream, a
//! malformed stream, and the errors a user must be able to act on. The
//! analyst over a real store is tested in the node crate.

use netspectra_ai::openai::{ChatClient, Retry};
use netspectra_ai::{AiError, Settings};
use netspectra_api::analyst::AskEvent;
use netspectra_model::config::{AiConfig, DurationText};
use netspectra_testkit::openai::{
    completion, error, finish, streamed_text, text_chunk, tool_call_chunks, OpenAiServer, Reply,
    Step,
};
use serde_json::json;
use std::time::{Duration, Instant};

fn client(server: &OpenAiServer, timeout: Duration) -> ChatClient {
    let ai = AiConfig {
        base_url: server.base_url(),
        model: "test-model".into(),
        api_key: "sk-test".into(),
        timeout: Some(DurationText(timeout.as_nanos() as u64)),
        max_tokens: Some(256),
        ..AiConfig::default()
    };
    let settings = Settings::from_config(&ai)
        .unwrap()
        .expect("a model is configured");
    ChatClient::new(settings).with_retry(Retry {
        attempts: 3,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
    })
}

fn question() -> Vec<serde_json::Value> {
    vec![json!({"role": "user", "content": "who talks most?"})]
}

/// Runs a streamed turn; the events sent and the outcome.
async fn stream(
    c: &ChatClient,
    tools: Option<&serde_json::Value>,
) -> (Vec<AskEvent>, Result<netspectra_ai::openai::Turn, AiError>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let turn = c.stream(&question(), tools, &tx).await;
    drop(tx);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (events, turn)
}

#[tokio::test]
async fn a_whole_answer_and_the_request_it_came_from() {
    let server = OpenAiServer::start(vec![completion("10.9.0.1 sent the most.")]);
    let turn = client(&server, Duration::from_secs(5))
        .complete(&question(), None)
        .await
        .unwrap();
    assert_eq!(turn.content, "10.9.0.1 sent the most.");
    assert_eq!(turn.finish_reason.as_deref(), Some("stop"));
    let got = &server.received()[0];
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(got.body["model"], "test-model");
    assert_eq!(got.body["max_tokens"], 256);
    assert_eq!(got.body["stream"], false);
    assert_eq!(got.body["messages"][0]["content"], "who talks most?");
}

#[tokio::test]
async fn a_streamed_answer_arrives_piece_by_piece() {
    let server = OpenAiServer::start(vec![streamed_text(&["10.9", ".0.1 ", "sent the most."])]);
    let (events, turn) = stream(&client(&server, Duration::from_secs(5)), None).await;
    assert_eq!(turn.unwrap().content, "10.9.0.1 sent the most.");
    assert_eq!(
        events,
        ["10.9", ".0.1 ", "sent the most."].map(|t| AskEvent::Delta(t.into()))
    );
    assert_eq!(server.received()[0].body["stream"], true);
}

#[tokio::test]
async fn tool_calls_streamed_in_pieces_are_put_back_together() {
    let mut steps = tool_call_chunks(
        0,
        "call_a",
        "top",
        &json!({"task": "per_src_ip", "by": "bytes"}),
    );
    steps.extend(tool_call_chunks(1, "call_b", "tasks", &json!({})));
    steps.push(finish("tool_calls"));
    let server = OpenAiServer::start(vec![Reply::Stream(steps)]);
    let specs = netspectra_ai::tools::specs();
    let (events, turn) = stream(&client(&server, Duration::from_secs(5)), Some(&specs)).await;
    let turn = turn.unwrap();
    assert!(events.is_empty(), "no text: {events:?}");
    assert_eq!(turn.finish_reason.as_deref(), Some("tool_calls"));
    let calls: Vec<(&str, &str, serde_json::Value)> = turn
        .tool_calls
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.name.as_str(),
                serde_json::from_str(&c.arguments).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                "call_a",
                "top",
                json!({"task": "per_src_ip", "by": "bytes"})
            ),
            ("call_b", "tasks", json!({}))
        ]
    );
    let offered = &server.received()[0].body["tools"];
    assert_eq!(offered.as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn a_busy_server_is_retried_after_the_time_it_asks_for() {
    let server = OpenAiServer::start(vec![
        Reply::Json {
            status: 429,
            body: json!({"error": {"message": "rate limited"}}),
            retry_after: Some(1),
        },
        error(503, "overloaded"),
        streamed_text(&["ok"]),
    ]);
    let started = Instant::now();
    let (_, turn) = stream(&client(&server, Duration::from_secs(5)), None).await;
    assert_eq!(turn.unwrap().content, "ok");
    let got = server.received();
    assert_eq!(got.len(), 3);
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_server_busy_through_every_retry_is_an_error_saying_so() {
    let server = OpenAiServer::start(vec![
        error(503, "a"),
        error(502, "b"),
        error(500, "still down"),
    ]);
    let (_, turn) = stream(&client(&server, Duration::from_secs(5)), None).await;
    match turn {
        Err(AiError::Unavailable(m)) => {
            assert!(m.contains("500") && m.contains("still down"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn a_stalled_stream_times_out() {
    let server = OpenAiServer::start(vec![Reply::Stream(vec![
        text_chunk("starting"),
        Step::Pause(Duration::from_secs(20)),
        finish("stop"),
    ])]);
    let started = Instant::now();
    let (events, turn) = stream(&client(&server, Duration::from_millis(700)), None).await;
    match turn {
        Err(AiError::Timeout(m)) => assert!(m.contains("ai.timeout"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(events, [AskEvent::Delta("starting".into())]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_malformed_stream_is_a_protocol_error() {
    let server = OpenAiServer::start(vec![Reply::Stream(vec![
        text_chunk("fine"),
        Step::Send("data: {\"choices\": [\n\n".into()),
    ])]);
    let (_, turn) = stream(&client(&server, Duration::from_secs(5)), None).await;
    match turn {
        Err(AiError::Protocol(m)) => assert!(m.contains("malformed"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A stream that ends before any answer is no answer either.
    let server = OpenAiServer::start(vec![Reply::Stream(vec![Step::Send(": hello\n\n".into())])]);
    let (_, turn) = stream(&client(&server, Duration::from_secs(5)), None).await;
    assert!(matches!(turn, Err(AiError::Protocol(_))), "{turn:?}");
}

#[tokio::test]
async fn a_bad_key_a_bad_model_and_no_tools_say_what_to_fix() {
    let server = OpenAiServer::start(vec![
        error(401, "Incorrect API key provided: sk-te***"),
        error(404, "The model `gpt-9` does not exist"),
        error(400, "tools are not supported by this model"),
    ]);
    let c = client(&server, Duration::from_secs(5));
    match stream(&c, None).await.1 {
        Err(AiError::Auth(m)) => {
            assert!(
                m.contains("401") && m.contains("NETSPECTRA_AI_API_KEY"),
                "{m}"
            );
            assert!(!m.contains("sk-test"), "the key never shows: {m}");
        }
        other => panic!("{other:?}"),
    }
    match stream(&c, None).await.1 {
        Err(AiError::Model(m)) => {
            assert!(m.contains("test-model") && m.contains("ai.model"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let specs = netspectra_ai::tools::specs();
    assert!(matches!(
        stream(&c, Some(&specs)).await.1,
        Err(AiError::ToolsUnsupported(_))
    ));
    assert_eq!(server.received().len(), 3, "none of these is retried");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_named() {
    let port = netspectra_testkit::free_port();
    let ai = AiConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        ..AiConfig::default()
    };
    let c = ChatClient::new(Settings::from_config(&ai).unwrap().unwrap()).with_retry(Retry {
        attempts: 2,
        first_delay: Duration::from_millis(300),
        max_delay: Duration::from_millis(300),
    });
    let started = Instant::now();
    let outcome = c.complete(&question(), None).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "retried once after the delay"
    );
    match outcome {
        Err(AiError::Unavailable(m)) => assert!(m.contains(&port.to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_need_a_model_and_never_show_the_key() {
    assert!(
        Settings::from_config(&AiConfig::default())
            .unwrap()
            .is_none(),
        "nothing set: offline"
    );
    let only_url = AiConfig {
        base_url: "http://localhost:11434/v1".into(),
        ..AiConfig::default()
    };
    assert!(Settings::from_config(&only_url)
        .unwrap_err()
        .to_string()
        .contains("ai.model"));
    let s = Settings::from_config(&AiConfig {
        model: "gpt-4o-mini".into(),
        api_key: "sk-secret".into(),
        ..AiConfig::default()
    })
    .unwrap()
    .unwrap();
    assert_eq!(s.endpoint, "https://api.openai.com/v1/chat/completions");
    assert!(!format!("{s:?}").contains("sk-secret"));
    let gemini = Settings::from_config(&AiConfig {
        model: "gemini-2.5-flash".into(),
        base_url: "https://generativelanguage.googleapis.com/v1beta/openai/".into(),
        ..AiConfig::default()
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        gemini.endpoint,
        "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
    );
}
