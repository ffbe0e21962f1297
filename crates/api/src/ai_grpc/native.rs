//! NetSpectra's `netspectra.v1.AnalystService`: `Ask` streams the
//! analyst's events as they happen (tool calls, text, the whole answer),
//! `AnalyzeAlert` analyses one notification's structured alerts.

use super::{alerts, failed, non_empty, too_slow, Gate};
use crate::analyst::{AskEvent, ToolCall};
use crate::pb;
use crate::pb::analyst_service_server::AnalystService;
use crate::pb::ask_event::{Delta, Done, Error, Event};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Implements NetSpectra's analyst service over a [`Gate`].
pub struct Native(pub(crate) Gate);

/// A tool call on the wire: its arguments as JSON text.
pub fn call_to_pb(c: &ToolCall) -> pb::ToolCall {
    pb::ToolCall {
        name: c.name.clone(),
        arguments_json: c.arguments.to_string(),
    }
}

/// A tool call from the wire (arguments that are not JSON are kept as a
/// JSON string rather than lost).
pub fn call_from_pb(c: pb::ToolCall) -> ToolCall {
    let arguments = serde_json::from_str(&c.arguments_json)
        .unwrap_or(serde_json::Value::String(c.arguments_json));
    ToolCall {
        name: c.name,
        arguments,
    }
}

/// One analyst event as the wire message.
pub fn event_to_pb(e: AskEvent) -> pb::AskEvent {
    let event = match e {
        AskEvent::ToolCall(c) => Event::ToolCall(call_to_pb(&c)),
        AskEvent::Delta(text) => Event::Delta(Delta { text }),
        AskEvent::Done { answer, tool_calls } => Event::Done(Done {
            answer,
            tool_calls: tool_calls.iter().map(call_to_pb).collect(),
        }),
        AskEvent::Failed(message) => Event::Error(Error { message }),
    };
    pb::AskEvent { event: Some(event) }
}

/// The wire message as an analyst event (None: an empty message, from a
/// newer server's event this build does not know).
pub fn event_from_pb(e: pb::AskEvent) -> Option<AskEvent> {
    Some(match e.event? {
        Event::ToolCall(c) => AskEvent::ToolCall(call_from_pb(c)),
        Event::Delta(d) => AskEvent::Delta(d.text),
        Event::Done(d) => AskEvent::Done {
            answer: d.answer,
            tool_calls: d.tool_calls.into_iter().map(call_from_pb).collect(),
        },
        Event::Error(e) => AskEvent::Failed(e.message),
    })
}

/// The events of one answer.
type Events = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AnalystService for Native {
    type AskStream = Events;

    async fn ask(&self, req: Request<pb::AskRequest>) -> Result<Response<Events>, Status> {
        let slot = self.0.admit(&req)?;
        let question = non_empty("question", req.into_inner().question)?;
        let mut events = self.0.analyst().ask(question);
        let limit = self.0.timeout();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _slot = slot;
            let forward = async {
                while let Some(event) = events.recv().await {
                    let last = matches!(event, AskEvent::Done { .. } | AskEvent::Failed(_));
                    // A client that left abandons the answer.
                    if tx.send(Ok(event_to_pb(event))).await.is_err() || last {
                        return;
                    }
                }
                let stopped = AskEvent::Failed("the analyst stopped without an answer".into());
                let _ = tx.send(Ok(event_to_pb(stopped))).await;
            };
            if tokio::time::timeout(limit, forward).await.is_err() {
                // Never waits: a client that stopped reading must not hold
                // the slot.
                let _ = tx.try_send(Err(too_slow(limit)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn analyze_alert(
        &self,
        req: Request<pb::AnalyzeAlertRequest>,
    ) -> Result<Response<pb::AnalyzeAlertResponse>, Status> {
        let _slot = self.0.admit(&req)?;
        let found = req.into_inner().alerts;
        if found.is_empty() {
            return Err(Status::invalid_argument("no alert to analyse"));
        }
        let records = found.into_iter().map(alerts::from_pb).collect();
        let limit = self.0.timeout();
        let analyst = self.0.analyst();
        let analysis = tokio::time::timeout(limit, analyst.analyse_alerts(records))
            .await
            .map_err(|_| too_slow(limit))?
            .map_err(|message| failed(&message))?;
        if analysis.trim().is_empty() {
            return Err(failed("it returned an empty analysis"));
        }
        Ok(Response::new(pb::AnalyzeAlertResponse {
            analysis,
            model: analyst.model().unwrap_or_default(),
        }))
    }
}
