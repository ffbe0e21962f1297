//! Go2NetSpectra's `v1.AIService`, unchanged on the wire, answered by the
//! analyst: `AnalyzeTraffic` (its alerter's enrichment: the alert text in,
//! one analysis out) and `AnalyzePromptStream` (a prompt in, the answer's
//! text streamed out).

use super::{failed, non_empty, too_slow, whole_answer, Gate};
use crate::analyst::AskEvent;
use crate::go2netspectra::ai_service_server::AiService;
use crate::go2netspectra::{
    AnalyzePromptRequest, AnalyzePromptResponse, AnalyzeTrafficRequest, AnalyzeTrafficResponse,
};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The reference's framing of `AnalyzeTraffic`'s input, word for word
/// (reference §8), so its alerter's text is read as it meant it.
pub fn frame_alert_text(text_input: &str) -> String {
    format!(
        "You are a senior network security analyst. Please analyze the following network alert \
         summary from the Go2NetSpectra monitoring system. Provide a concise analysis of the \
         potential threat, its severity, and recommended next steps for investigation. The output \
         should be clear and actionable.\n\n--- Alert Data ---\n{text_input}\n--- End of Alert Data ---"
    )
}

/// Implements the reference's service over a [`Gate`].
pub struct Reference(pub(crate) Gate);

/// The chunks of one streamed answer.
type Chunks =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<AnalyzePromptResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AiService for Reference {
    async fn analyze_traffic(
        &self,
        req: Request<AnalyzeTrafficRequest>,
    ) -> Result<Response<AnalyzeTrafficResponse>, Status> {
        let _slot = self.0.admit(&req)?;
        let text = non_empty("text_input", req.into_inner().text_input)?;
        let events = self.0.analyst().ask(frame_alert_text(&text));
        let (answer, _) = whole_answer(events, self.0.timeout()).await?;
        Ok(Response::new(AnalyzeTrafficResponse {
            text_output: answer,
        }))
    }

    type AnalyzePromptStreamStream = Chunks;

    async fn analyze_prompt_stream(
        &self,
        req: Request<AnalyzePromptRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let slot = self.0.admit(&req)?;
        let prompt = non_empty("prompt", req.into_inner().prompt)?;
        let mut events = self.0.analyst().ask(prompt);
        let limit = self.0.timeout();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _slot = slot;
            let send = |r: Result<String, Status>| {
                let tx = tx.clone();
                async move {
                    tx.send(r.map(|chunk| AnalyzePromptResponse { chunk }))
                        .await
                        .is_ok()
                }
            };
            let forward = async {
                let mut sent_text = false;
                while let Some(event) = events.recv().await {
                    match event {
                        AskEvent::Delta(text) if text.is_empty() => {}
                        AskEvent::Delta(text) => {
                            sent_text = true;
                            if !send(Ok(text)).await {
                                return; // the client left: abandon the answer
                            }
                        }
                        AskEvent::ToolCall(_) => {}
                        // An analyst that only reports the whole answer
                        // still gets it to the client, in one chunk.
                        AskEvent::Done { answer, .. } if !sent_text => {
                            if answer.trim().is_empty() {
                                send(Err(failed("it returned an empty answer"))).await;
                            } else {
                                send(Ok(answer)).await;
                            }
                            return;
                        }
                        AskEvent::Done { .. } => return,
                        AskEvent::Failed(message) => {
                            send(Err(failed(&message))).await;
                            return;
                        }
                    }
                }
                send(Err(failed("it stopped without an answer"))).await;
            };
            if tokio::time::timeout(limit, forward).await.is_err() {
                // Never waits: a client that stopped reading must not hold
                // the slot.
                let _ = tx.try_send(Err(too_slow(limit)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
