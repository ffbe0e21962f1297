//! A Chat Completions client for any OpenAI-compatible server (OpenAI,
//! Gemini's compatible endpoint, vLLM, Ollama, llama.cpp's server): one
//! answer whole ([`ChatClient::complete`]) or streamed as Server-Sent
//! Events ([`ChatClient::stream`]), with tool calls either way.
//!
//! Failures say what to fix: a refused key, an unknown model, a server
//! that does not take tools. Busy servers (429, 5xx) and refused
//! connections are retried with backoff (honouring `Retry-After`); a
//! server that stalls is given up after `ai.timeout` of silence.

use crate::settings::Settings;
use crate::sse::{SseEvent, SseParser};
use crate::AiError;
use netspectra_api::analyst::AskEvent;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc::Sender;

/// How a busy server is retried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts, the first included.
    pub attempts: u32,
    /// Wait before the second attempt (doubling), unless the server
    /// says how long (`Retry-After`, capped at [`Retry::max_delay`]).
    pub first_delay: Duration,
    /// Longest single wait.
    pub max_delay: Duration,
}

impl Default for Retry {
    /// 4 attempts over about 3.5 s, a server's `Retry-After` up to 30 s.
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A tool call the model asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestedCall {
    /// The server's id for it (echoed in the tool's answer).
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// One assistant turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Turn {
    /// Its text.
    pub content: String,
    /// The tools it wants run before it goes on.
    pub tool_calls: Vec<RequestedCall>,
    /// Why it stopped (`stop`, `tool_calls`, `length`, …).
    pub finish_reason: Option<String>,
}

impl Turn {
    /// The turn as a message of the conversation.
    pub fn message(&self) -> Value {
        let mut m = json!({"role": "assistant", "content": self.content});
        if !self.tool_calls.is_empty() {
            m["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
        }
        m
    }
}

/// Largest error or non-streamed answer read (a bounded read).
const MAX_ANSWER: usize = 8 << 20;
/// Most text one answer may stream (far beyond any `max_tokens`): a
/// server that never stops is cut off.
const MAX_TEXT: usize = 4 << 20;
/// Most tool calls one turn may ask for.
const MAX_CALLS: usize = 64;

/// Talks to one model server.
#[derive(Clone, Debug)]
pub struct ChatClient {
    settings: Settings,
    retry: Retry,
}

enum Attempt {
    Again(AiError, Option<Duration>),
    Fail(AiError),
}

impl ChatClient {
    /// A client for `settings`.
    pub fn new(settings: Settings) -> ChatClient {
        ChatClient {
            settings,
            retry: Retry::default(),
        }
    }

    /// The same client retrying as `retry` says.
    pub fn with_retry(mut self, retry: Retry) -> ChatClient {
        self.retry = retry;
        self
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn body(&self, messages: &[Value], tools: Option<&Value>, stream: bool) -> Value {
        let mut body = json!({
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": self.settings.max_tokens,
            "stream": stream,
        });
        if let Some(tools) = tools {
            body["tools"] = tools.clone();
            body["tool_choice"] = "auto".into();
        }
        body
    }

    /// One answer, whole.
    pub async fn complete(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
    ) -> Result<Turn, AiError> {
        let answer = self.open(&self.body(messages, tools, false)).await?;
        let timeout = self.settings.timeout;
        let bytes = tokio::time::timeout(timeout, answer.bytes(MAX_ANSWER))
            .await
            .map_err(|_| self.stalled())?
            .map_err(|e| AiError::Unavailable(format!("{}: {e}", self.settings.base_url)))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            AiError::Protocol(format!(
                "the model server's answer is not JSON ({e}): {}",
                snippet(&String::from_utf8_lossy(&bytes))
            ))
        })?;
        whole_turn(&value)
    }

    /// One answer, streamed: each piece of text is sent on `deltas` as it
    /// arrives (a dropped receiver abandons the answer).
    pub async fn stream(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        deltas: &Sender<AskEvent>,
    ) -> Result<Turn, AiError> {
        let mut answer = self.open(&self.body(messages, tools, true)).await?;
        let is_sse = answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !is_sse {
            // A server that ignored `stream`: one whole answer.
            let bytes = tokio::time::timeout(self.settings.timeout, answer.bytes(MAX_ANSWER))
                .await
                .map_err(|_| self.stalled())?
                .map_err(|e| AiError::Unavailable(e.to_string()))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                AiError::Protocol(format!(
                    "the model server answered neither an event stream nor JSON ({e}): {}",
                    snippet(&String::from_utf8_lossy(&bytes))
                ))
            })?;
            let turn = whole_turn(&value)?;
            if !turn.content.is_empty() {
                send(deltas, AskEvent::Delta(turn.content.clone())).await?;
            }
            return Ok(turn);
        }
        let mut parser = SseParser::default();
        let mut turn = Turn::default();
        loop {
            let chunk = tokio::time::timeout(self.settings.timeout, answer.chunk())
                .await
                .map_err(|_| self.stalled())?
                .map_err(|e| AiError::Unavailable(format!("the model's stream broke off: {e}")))?;
            let ended = chunk.is_none();
            let events = match chunk {
                Some(bytes) => parser.push(&bytes),
                None => parser.finish().map(|e| e.into_iter().collect()),
            }
            .map_err(|e| AiError::Protocol(format!("the model's stream: {e}")))?;
            for event in events {
                let (text, done) = apply(&mut turn, &event)?;
                if let Some(text) = text {
                    send(deltas, AskEvent::Delta(text)).await?;
                }
                if done {
                    return Ok(turn);
                }
            }
            if ended {
                break;
            }
        }
        // Ended without `[DONE]`: some servers do; an answer that never
        // started is an error, not an empty answer.
        if turn.finish_reason.is_none() && turn.content.is_empty() && turn.tool_calls.is_empty() {
            return Err(AiError::Protocol(
                "the model's stream ended before any answer".into(),
            ));
        }
        Ok(turn)
    }

    fn stalled(&self) -> AiError {
        AiError::Timeout(format!(
            "the model server at {} sent nothing for {} s (ai.timeout)",
            self.settings.base_url,
            self.settings.timeout.as_secs_f64()
        ))
    }

    /// Sends the request until a 2xx answer starts, retrying what a retry
    /// can fix.
    async fn open(&self, body: &Value) -> Result<netspectra_http::Response, AiError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let auth = self
            .settings
            .api_key
            .as_ref()
            .map(|k| format!("Bearer {k}"));
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let mut delay = self.retry.first_delay;
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            let sent = tokio::time::timeout(
                self.settings.timeout,
                netspectra_http::request("POST", &self.settings.endpoint, &headers, bytes.clone()),
            )
            .await;
            let outcome = match sent {
                Err(_) => Attempt::Fail(self.stalled()),
                Ok(Err(netspectra_http::HttpError::Connect(e))) => {
                    Attempt::Again(AiError::Unavailable(e), None)
                }
                Ok(Err(netspectra_http::HttpError::Protocol(e))) => {
                    Attempt::Again(AiError::Unavailable(e), None)
                }
                Ok(Err(e)) => Attempt::Fail(AiError::Config(format!(
                    "cannot reach ai.base_url {}: {e}",
                    self.settings.base_url
                ))),
                Ok(Ok(answer)) if (200..300).contains(&answer.status) => {
                    metrics::counter!("netspectra_ai_model_requests_total", "outcome" => "ok")
                        .increment(1);
                    return Ok(answer);
                }
                Ok(Ok(answer)) => self.refused(answer).await,
            };
            match outcome {
                Attempt::Again(error, wait) if attempt < attempts => {
                    metrics::counter!("netspectra_ai_model_requests_total", "outcome" => "retried")
                        .increment(1);
                    let wait = wait.unwrap_or(delay).min(self.retry.max_delay);
                    tracing::warn!(message = "model server busy or unreachable; retrying", %error, attempt, wait_ms = wait.as_millis() as u64);
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                Attempt::Again(error, _) | Attempt::Fail(error) => {
                    metrics::counter!("netspectra_ai_model_requests_total", "outcome" => "failed")
                        .increment(1);
                    return Err(error);
                }
            }
        }
    }

    /// What a non-2xx answer means.
    async fn refused(&self, answer: netspectra_http::Response) -> Attempt {
        let status = answer.status;
        let wait = answer
            .header("retry-after")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = tokio::time::timeout(self.settings.timeout, answer.bytes(64 << 10))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = error_message(&body);
        let base = &self.settings.base_url;
        let model = &self.settings.model;
        let about = BadRequest::of(&body, &message);
        match status {
            429 | 500 | 502 | 503 | 504 => Attempt::Again(
                AiError::Unavailable(format!("the model server at {base} answered {status}: {message}")),
                wait,
            ),
            401 | 403 => Attempt::Fail(AiError::Auth(format!(
                "the model server at {base} refused the API key ({status}: {message}); set ai.api_key or {}",
                crate::settings::API_KEY_ENV
            ))),
            404 => Attempt::Fail(AiError::Model(format!(
                "model `{model}` or its endpoint is not at {base} (404: {message}); check ai.model and ai.base_url"
            ))),
            400 | 422 if about == BadRequest::Tools => {
                Attempt::Fail(AiError::ToolsUnsupported(format!(
                    "model `{model}` at {base} does not take tools ({status}: {message})"
                )))
            }
            400 | 422 if about == BadRequest::Model => Attempt::Fail(AiError::Model(format!(
                "model `{model}` is not usable at {base} ({status}: {message}); check ai.model"
            ))),
            _ => Attempt::Fail(AiError::Refused(format!(
                "the model server at {base} answered {status}: {message}"
            ))),
        }
    }
}

/// What a 400 is about, as far as a user can act on it.
#[derive(Debug, PartialEq, Eq)]
enum BadRequest {
    /// The model (or this server) does not take tools.
    Tools,
    /// The model name is unknown.
    Model,
    /// Anything else (a context too long, a bad parameter…).
    Other,
}

impl BadRequest {
    /// From the error's `code` when the server gives one (OpenAI:
    /// `model_not_found`), else from narrow phrases of its message: "too
    /// long … functions" is not a server without tools.
    fn of(body: &[u8], message: &str) -> BadRequest {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let error = &value.get(0).unwrap_or(&value)["error"];
        let code = error["code"].as_str().unwrap_or_default();
        let m = message.to_ascii_lowercase();
        if code == "model_not_found" {
            return BadRequest::Model;
        }
        if code.contains("context_length") || m.contains("context length") || m.contains("too long")
        {
            return BadRequest::Other;
        }
        let refuses = [
            "not support",
            "unsupported",
            "does not support",
            "not enabled",
            "not available",
            "unknown parameter",
            "unrecognized",
        ]
        .iter()
        .any(|p| m.contains(p));
        if refuses && (m.contains("tool") || m.contains("function")) {
            BadRequest::Tools
        } else if m.contains("model")
            && [
                "not found",
                "does not exist",
                "unknown model",
                "invalid model",
                "no such model",
                "not a valid model",
            ]
            .iter()
            .any(|p| m.contains(p))
        {
            BadRequest::Model
        } else {
            BadRequest::Other
        }
    }
}

/// Sends one event; a receiver that went away abandons the answer.
pub(crate) async fn send(deltas: &Sender<AskEvent>, event: AskEvent) -> Result<(), AiError> {
    deltas.send(event).await.map_err(|_| AiError::Abandoned)
}

/// Applies one stream event to `turn`: the text it adds (if any), and
/// whether the stream says it is done.
fn apply(turn: &mut Turn, event: &SseEvent) -> Result<(Option<String>, bool), AiError> {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Ok((None, true));
    }
    let chunk: Value = serde_json::from_str(data).map_err(|e| {
        AiError::Protocol(format!(
            "malformed event in the model's stream ({e}): {}",
            snippet(data)
        ))
    })?;
    if chunk.get("error").is_some() {
        return Err(AiError::Refused(format!(
            "the model server reported an error mid-answer: {}",
            error_message(data.as_bytes())
        )));
    }
    let Some(choice) = chunk["choices"].get(0) else {
        return Ok((None, false)); // e.g. a usage-only chunk
    };
    let delta = &choice["delta"];
    let text = delta["content"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    if let Some(text) = &text {
        if turn.content.len() + text.len() > MAX_TEXT {
            return Err(AiError::Protocol(format!(
                "the model's answer grew beyond {MAX_TEXT} bytes"
            )));
        }
        turn.content.push_str(text);
    }
    if let Some(calls) = delta["tool_calls"].as_array() {
        for (position, c) in calls.iter().enumerate() {
            let id = c["id"].as_str().unwrap_or_default();
            // Servers that stream a call in pieces number it (`index`);
            // some send each call whole without one.
            let slot = match c["index"].as_u64() {
                Some(i) => i as usize,
                None if !id.is_empty() => turn
                    .tool_calls
                    .iter()
                    .position(|t| t.id == id)
                    .unwrap_or(turn.tool_calls.len()),
                None => turn.tool_calls.len().max(position),
            };
            if slot >= MAX_CALLS {
                return Err(AiError::Protocol(format!(
                    "tool call index {slot} in the model's stream"
                )));
            }
            while turn.tool_calls.len() <= slot {
                turn.tool_calls.push(RequestedCall::default());
            }
            let t = &mut turn.tool_calls[slot];
            if !id.is_empty() {
                t.id = id.to_string();
            }
            if let Some(name) = c["function"]["name"].as_str() {
                t.name.push_str(name);
            }
            t.arguments
                .push_str(&arguments_text(&c["function"]["arguments"]));
        }
    }
    if let Some(reason) = choice["finish_reason"].as_str() {
        turn.finish_reason = Some(reason.to_string());
    }
    Ok((text, false))
}

/// A whole event stream, read at once: the turn it carries (tests and the
/// fuzz target read streams this way; [`ChatClient::stream`] applies the
/// same rules as the bytes arrive).
pub fn parse_stream(bytes: &[u8]) -> Result<Turn, AiError> {
    let mut parser = SseParser::default();
    let mut turn = Turn::default();
    let bad = |e: crate::sse::SseError| AiError::Protocol(format!("the model's stream: {e}"));
    let events = parser.push(bytes).map_err(bad)?;
    for event in events.iter().chain(parser.finish().map_err(bad)?.iter()) {
        if apply(&mut turn, event)?.1 {
            break;
        }
    }
    Ok(turn)
}

/// A call's arguments as JSON text: servers send a string of JSON (as
/// OpenAI specifies), some an object.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A non-streamed answer's turn.
fn whole_turn(value: &Value) -> Result<Turn, AiError> {
    let Some(choice) = value["choices"].get(0) else {
        return Err(AiError::Protocol(format!(
            "the model server's answer has no choices: {}",
            snippet(&value.to_string())
        )));
    };
    let message = &choice["message"];
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .take(MAX_CALLS)
                .map(|c| RequestedCall {
                    id: c["id"].as_str().unwrap_or_default().to_string(),
                    name: c["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    arguments: arguments_text(&c["function"]["arguments"]),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Turn {
        content: message["content"].as_str().unwrap_or_default().to_string(),
        tool_calls,
        finish_reason: choice["finish_reason"].as_str().map(str::to_string),
    })
}

/// The message of an OpenAI-style error body (`{"error":{"message"}}`,
/// or `[{"error":…}]` as Gemini sends), else the body's start.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let value = value.get(0).cloned().unwrap_or(value);
    match &value["error"] {
        Value::String(s) => s.clone(),
        e if e["message"].is_string() => e["message"].as_str().unwrap_or_default().to_string(),
        _ if text.trim().is_empty() => "no details".into(),
        _ => snippet(&text),
    }
}

/// The first 200 characters of `text`, on one line.
fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_several_servers_read_alike() {
        // OpenAI: numbered pieces; Gemini's compatible endpoint: whole
        // calls without an index; a usage-only chunk; no [DONE].
        let openai = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi \"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"top\",\"arguments\":\"{\\\"task\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"t\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        let gemini = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi \",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"top\",\"arguments\":\"{\\\"task\\\":\\\"t\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n";
        for stream in [openai, gemini] {
            let turn = parse_stream(stream.as_bytes()).unwrap();
            assert_eq!(turn.content, "Hi ");
            assert_eq!(turn.finish_reason.as_deref(), Some("tool_calls"));
            assert_eq!(
                turn.tool_calls,
                [RequestedCall {
                    id: "a".into(),
                    name: "top".into(),
                    arguments: r#"{"task":"t"}"#.into()
                }],
                "{stream}"
            );
        }
        assert!(parse_stream(
            b"data: {\"choices\": [{\"delta\": {\"tool_calls\": [{\"index\": 99}]}}]}\n\n"
        )
        .is_err());
    }

    #[test]
    fn bad_requests_are_told_apart_by_what_to_fix() {
        let of = |body: &str| BadRequest::of(body.as_bytes(), &error_message(body.as_bytes()));
        assert_eq!(
            of(r#"{"error":{"message":"tools are not supported for this model"}}"#),
            BadRequest::Tools
        );
        assert_eq!(
            of(
                r#"{"error":{"message":"registry.ollama.ai/library/gemma does not support tools"}}"#
            ),
            BadRequest::Tools
        );
        assert_eq!(
            of(r#"{"error":{"message":"x","code":"model_not_found"}}"#),
            BadRequest::Model
        );
        assert_eq!(
            of(r#"{"error":{"message":"The model `gpt-9` does not exist"}}"#),
            BadRequest::Model
        );
        assert_eq!(
            of(
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens; your messages and functions are too long","code":"context_length_exceeded"}}"#
            ),
            BadRequest::Other
        );
        assert_eq!(
            of(r#"{"error":{"message":"temperature must be at most 2"}}"#),
            BadRequest::Other
        );
    }

    #[test]
    fn error_bodies_of_several_servers_give_their_message() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#),
            "Incorrect API key provided"
        );
        assert_eq!(
            error_message(br#"[{"error":{"code":400,"message":"bad model"}}]"#),
            "bad model"
        );
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(error_message(b""), "no details");
        assert_eq!(error_message(b"<html>oops</html>"), "<html>oops</html>");
    }
}
