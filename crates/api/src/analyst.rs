//! The seam between the query API's faces and the AI analyst
//! (`netspectra-ai`): the faces (`POST /api/v1/ask`, the `ai` role's gRPC
//! services, the dashboard's Ask view) stream an [`Analyst`]'s
//! [`AskEvent`]s without knowing whether a model or the built-in offline
//! analyst answers. The analyst itself depends on this crate (its tools
//! are the query operations), so the seam lives here.

use netspectra_model::alert::AlertRecord;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;

/// One tool call the analyst made: an operation name (`top`,
/// `heavy_hitters`, …) and its arguments, the HTTP operation's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// Operation, with `_` for the HTTP path's `-`.
    pub name: String,
    /// Parameters as a JSON object.
    pub arguments: Value,
}

impl ToolCall {
    /// `{"name": …, "arguments": {…}}` (**contract**, in `ask --format json`
    /// and the SSE stream).
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "arguments": self.arguments})
    }
}

/// What an answer in progress reports, in order: tool calls and text
/// deltas interleaved, then exactly one [`AskEvent::Done`] or
/// [`AskEvent::Failed`].
#[derive(Clone, Debug, PartialEq)]
pub enum AskEvent {
    /// The analyst ran a query.
    ToolCall(ToolCall),
    /// The next piece of the answer's text.
    Delta(String),
    /// The whole answer and every tool call made for it.
    Done {
        /// The answer's full text (Markdown).
        answer: String,
        /// The calls, in order.
        tool_calls: Vec<ToolCall>,
    },
    /// The answer could not be completed (the text so far stands).
    Failed(String),
}

impl AskEvent {
    /// The SSE event name and JSON data (**contract** of `POST
    /// /api/v1/ask`): `tool_call` `{"name","arguments"}`, `delta`
    /// `{"text"}`, `done` `{"answer","tool_calls"}`, `error`
    /// `{"error":{"code","message"}}`.
    pub fn sse(&self) -> (&'static str, Value) {
        match self {
            AskEvent::ToolCall(c) => ("tool_call", c.to_json()),
            AskEvent::Delta(text) => ("delta", json!({ "text": text })),
            AskEvent::Done { answer, tool_calls } => (
                "done",
                json!({
                    "answer": answer,
                    "tool_calls": tool_calls.iter().map(ToolCall::to_json).collect::<Vec<_>>(),
                }),
            ),
            AskEvent::Failed(message) => (
                "error",
                json!({"error": {"code": "analyst_failed", "message": message}}),
            ),
        }
    }

    /// Reads back what [`AskEvent::sse`] wrote (clients of the stream).
    pub fn from_sse(event: &str, data: &Value) -> Option<AskEvent> {
        let call = |v: &Value| ToolCall {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            arguments: v["arguments"].clone(),
        };
        Some(match event {
            "tool_call" => AskEvent::ToolCall(call(data)),
            "delta" => AskEvent::Delta(data["text"].as_str()?.to_string()),
            "done" => AskEvent::Done {
                answer: data["answer"].as_str()?.to_string(),
                tool_calls: data["tool_calls"]
                    .as_array()
                    .map(|a| a.iter().map(call).collect())
                    .unwrap_or_default(),
            },
            "error" => AskEvent::Failed(
                data["error"]["message"]
                    .as_str()
                    .unwrap_or("the analyst failed")
                    .to_string(),
            ),
            _ => return None,
        })
    }
}

/// A future the analyst returns, boxed so the trait stays object-safe.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Something that answers questions about the stored traffic.
pub trait Analyst: Send + Sync + 'static {
    /// Starts answering `question`; the events arrive on the receiver,
    /// the last one [`AskEvent::Done`] or [`AskEvent::Failed`]. Dropping
    /// the receiver abandons the answer.
    fn ask(&self, question: String) -> tokio::sync::mpsc::Receiver<AskEvent>;

    /// An analysis (Markdown) of one notification's alerts, from their
    /// structured records and the stored context around them.
    fn analyse_alerts(&self, alerts: Vec<AlertRecord>) -> BoxFuture<Result<String, String>>;

    /// The model answering (None: the built-in offline analyst).
    fn model(&self) -> Option<String>;
}
