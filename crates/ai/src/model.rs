//! The model-backed analyst: a conversation with an OpenAI-compatible
//! model that may call the query tools (at most [`MAX_ROUNDS`] rounds of
//! calls), its answer streamed as it is written.

use crate::context;
use crate::openai::{send, ChatClient};
use crate::tools::{self, Tools};
use crate::AiError;
use netspectra_api::analyst::{AskEvent, BoxFuture, ToolCall};
use netspectra_model::alert::AlertRecord;
use serde_json::{json, Value};
use tokio::sync::mpsc::Sender;

/// Rounds of tool calls per answer; after them the model must answer.
pub const MAX_ROUNDS: usize = 8;

/// What the model is told it is.
const SYSTEM: &str = "You are NetSpectra's network traffic analyst, helping network engineers, \
security analysts and SREs. Answer from the stored measurements only: call the tools (they are \
NetSpectra's query operations) to get numbers, starting with `tasks` to learn the task names, and \
never invent an address, a count or a time. Quote the numbers you rely on, name the task they come \
from, say how sure a sketch estimate is (its error bound), and end with concrete next steps. Be \
concise; use Markdown.";

/// The model's instructions for an alert notification.
const ALERT_TASK: &str = "Analyse the alerts below for the on-call engineer: the likely cause, \
how serious it is, and the next steps to investigate or mitigate. Use only the alert records and \
the stored context given (the key's traffic per window around the alert and its top peers). Be \
brief: a few sentences or bullets, Markdown.";

/// An analyst asking `client`'s model, with the store's `tools`.
#[derive(Clone)]
pub struct ModelAnalyst {
    client: ChatClient,
    tools: Tools,
}

impl ModelAnalyst {
    /// An analyst over `client` and `tools`.
    pub fn new(client: ChatClient, tools: Tools) -> ModelAnalyst {
        ModelAnalyst { client, tools }
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.client.settings().model
    }

    /// Answers `question`, streaming to `events`; returns the answer and
    /// the calls made (the caller sends `done`).
    pub async fn answer(
        &self,
        question: &str,
        events: &Sender<AskEvent>,
    ) -> Result<(String, Vec<ToolCall>), AiError> {
        let mut use_tools = self.client.settings().tools;
        let mut messages = vec![
            json!({"role": "system", "content": SYSTEM}),
            json!({"role": "user", "content": question}),
        ];
        let mut calls = Vec::new();
        if !use_tools {
            self.context_instead_of_tools(&mut messages, question, &mut calls, events)
                .await?;
        }
        let specs = tools::specs();
        let mut answer = String::new();
        let mut round = 0;
        loop {
            let last_round = round >= MAX_ROUNDS;
            if last_round && use_tools && round == MAX_ROUNDS {
                // Tools stay offered (a conversation holding tool calls
                // without them is refused by some servers); the model is
                // told to answer instead.
                messages.push(json!({"role": "user", "content": format!(
                    "You have used all {MAX_ROUNDS} rounds of tool calls: answer now from the results above."
                )}));
            }
            let offer = use_tools.then_some(&specs);
            let turn = match self.client.stream(&messages, offer, events).await {
                Err(AiError::ToolsUnsupported(why)) if use_tools && round == 0 => {
                    tracing::warn!(message = "model does not take tools; its prompt gets the stored context instead", %why);
                    use_tools = false;
                    self.context_instead_of_tools(&mut messages, question, &mut calls, events)
                        .await?;
                    continue;
                }
                other => other?,
            };
            answer.push_str(&turn.content);
            if turn.finish_reason.as_deref() == Some("length") {
                let note = "\n\n_(The answer was cut at ai.max_tokens.)_";
                answer.push_str(note);
                send(events, AskEvent::Delta(note.into())).await?;
            }
            if turn.tool_calls.is_empty() {
                break;
            }
            if last_round {
                if answer.trim().is_empty() {
                    return Err(AiError::Empty(format!(
                        "model `{}` kept calling tools after {MAX_ROUNDS} rounds without answering",
                        self.model()
                    )));
                }
                break;
            }
            messages.push(turn.message());
            for requested in &turn.tool_calls {
                let call = ToolCall {
                    name: requested.name.clone(),
                    arguments: serde_json::from_str(&requested.arguments).unwrap_or(Value::Null),
                };
                send(events, AskEvent::ToolCall(call.clone())).await?;
                let result = if call.arguments.is_null() && !requested.arguments.trim().is_empty() {
                    json!({"error": {"code": "bad_request", "message": format!("the arguments are not JSON: {}", requested.arguments)}})
                } else {
                    self.tools.call(&call).await
                };
                messages.push(
                    json!({"role": "tool", "tool_call_id": requested.id, "name": requested.name,
                                     "content": tools::for_model(result)}),
                );
                calls.push(call);
            }
            round += 1;
        }
        if answer.trim().is_empty() {
            return Err(AiError::Empty(format!(
                "model `{}` returned an empty answer",
                self.model()
            )));
        }
        Ok((answer, calls))
    }

    /// For a model without tools: the store's overview in the system
    /// prompt (the calls still reported, as they ran).
    async fn context_instead_of_tools(
        &self,
        messages: &mut [Value],
        question: &str,
        calls: &mut Vec<ToolCall>,
        events: &Sender<AskEvent>,
    ) -> Result<(), AiError> {
        let gathered =
            context::overview(&self.tools, &crate::offline::addresses_in(question)).await;
        for call in gathered.calls() {
            send(events, AskEvent::ToolCall(call.clone())).await?;
            calls.push(call);
        }
        messages[0] = json!({"role": "system", "content": format!(
            "{SYSTEM}\n\nNo tools are available; these query results from the store are all you have \
             (each with the operation and parameters that produced it):\n{}",
            gathered.to_json()
        )});
        Ok(())
    }

    /// The analysis of one notification's alerts: their records and the
    /// stored context around them, one model answer (no tools, so its
    /// time is bounded by one request).
    pub fn analyse(&self, alerts: Vec<AlertRecord>) -> BoxFuture<Result<String, String>> {
        let me = self.clone();
        Box::pin(async move {
            let (gathered, _) = context::around_alerts(&me.tools, &alerts).await;
            let records: Vec<Value> = alerts.iter().map(AlertRecord::to_json).collect();
            let messages = [
                json!({"role": "system", "content": SYSTEM}),
                json!({"role": "user", "content": format!(
                    "{ALERT_TASK}\n\nAlerts (JSON):\n{}\n\nStored context (JSON):\n{}",
                    Value::Array(records),
                    gathered.to_json()
                )}),
            ];
            let turn = me
                .client
                .complete(&messages, None)
                .await
                .map_err(|e| e.to_string())?;
            if turn.content.trim().is_empty() {
                return Err(format!("model `{}` returned an empty analysis", me.model()));
            }
            Ok(turn.content)
        })
    }
}
