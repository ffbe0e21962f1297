//! The AI analyst: answers questions about the stored traffic, and
//! analyses alert notifications, from the real numbers in the store.
//!
//! - [`openai`]: a Chat Completions client for any OpenAI-compatible
//!   server (OpenAI, Gemini's compatible endpoint, vLLM, Ollama,
//!   llama.cpp), streaming ([`sse`]) and with tool calls.
//! - [`tools`]: the query operations offered to the model as tools, named
//!   and parameterised exactly as the HTTP API's operations and answered
//!   with its JSON.
//! - [`model`]: the conversation loop (up to 8 rounds of tool calls).
//! - [`offline`]: with no model configured, a deterministic analyst that
//!   reads the same tool results ([`context`]) and writes its findings.
//!
//! [`build`] picks one from the `ai` config section and returns it as the
//! query API's [`Analyst`](netspectra_api::analyst::Analyst), which
//! `POST /api/v1/ask`, the `ai` role's gRPC services, `netspectra ask`
//! and the alerter's enrichment all use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use netspectra_api::{analyst::AskEvent, Limits, QueryService};
//! use netspectra_store::{read::Reader, StoreUrl};
//! use std::sync::Arc;
//!
//! let reader = Reader::open(&StoreUrl::parse("sqlite:netspectra.db")?)?;
//! let tools = netspectra_ai::Tools::local(Arc::new(QueryService::new(reader, Limits::default())));
//! let analyst = netspectra_ai::build(&Default::default(), tools)?; // no model: offline
//! let mut events = analyst.ask("who is scanning?".into());
//! while let Some(event) = events.recv().await {
//!     if let AskEvent::Delta(text) = event {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod context;
pub mod model;
pub mod offline;
pub mod openai;
pub mod settings;
pub mod sse;
pub mod tools;

pub use settings::Settings;
pub use tools::Tools;

use netspectra_api::analyst::{Analyst, AskEvent, BoxFuture};
use netspectra_model::alert::AlertRecord;
use netspectra_model::config::AiConfig;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Why the analyst could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// The `ai` section cannot work.
    #[error("{0}")]
    Config(String),
    /// The model server refused the API key.
    #[error("{0}")]
    Auth(String),
    /// The model is not served there.
    #[error("{0}")]
    Model(String),
    /// The model does not take tools.
    #[error("{0}")]
    ToolsUnsupported(String),
    /// The model server refused the request for another reason.
    #[error("{0}")]
    Refused(String),
    /// The model server could not be reached, or stayed busy through
    /// every retry.
    #[error("{0}")]
    Unavailable(String),
    /// The model server went silent for longer than `ai.timeout`.
    #[error("{0}")]
    Timeout(String),
    /// The model server's answer broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// The model answered nothing.
    #[error("{0}")]
    Empty(String),
    /// Whoever asked went away.
    #[error("the question was abandoned")]
    Abandoned,
}

/// Questions answered at once; more are refused (a model answer holds a
/// connection to the model server for up to minutes).
pub const MAX_CONCURRENT_ANSWERS: usize = 4;

/// Longest time one answer may take, tool calls included; the HTTP face
/// closes a connection after 300 s and the gRPC gateway's deadline is the
/// same, so an answer that would outlive them is ended with a reason.
pub const MAX_ANSWER_TIME: std::time::Duration = std::time::Duration::from_secs(295);

/// Events buffered towards a slow reader before the answer waits.
const EVENT_BUFFER: usize = 64;

enum Backend {
    Model(model::ModelAnalyst),
    Offline(offline::OfflineAnalyst),
}

/// The analyst [`build`] makes.
struct Built {
    backend: Arc<Backend>,
    answering: Arc<Semaphore>,
}

/// The analyst for the `ai` section: a model's when `ai.model` (or
/// `ai.base_url`) is set, else the offline analyst; both read the store
/// through `tools`.
pub fn build(ai: &AiConfig, tools: Tools) -> Result<Arc<dyn Analyst>, AiError> {
    let backend = match Settings::from_config(ai)? {
        Some(settings) => Backend::Model(model::ModelAnalyst::new(
            openai::ChatClient::new(settings),
            tools,
        )),
        None => Backend::Offline(offline::OfflineAnalyst::new(tools)),
    };
    Ok(Arc::new(Built {
        backend: Arc::new(backend),
        answering: Arc::new(Semaphore::new(MAX_CONCURRENT_ANSWERS)),
    }))
}

impl Analyst for Built {
    fn ask(&self, question: String) -> tokio::sync::mpsc::Receiver<AskEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            let _ = tx.try_send(AskEvent::Failed(format!(
                "the analyst is answering {MAX_CONCURRENT_ANSWERS} questions already; ask again shortly"
            )));
            return rx;
        };
        let backend = self.backend.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = async {
                match &*backend {
                    Backend::Offline(o) => o.answer(&question, &tx).await,
                    Backend::Model(m) => {
                        let (answer, tool_calls) = m.answer(&question, &tx).await?;
                        openai::send(&tx, AskEvent::Done { answer, tool_calls }).await
                    }
                }
            };
            let outcome = tokio::time::timeout(MAX_ANSWER_TIME, answer)
                .await
                .unwrap_or_else(|_| {
                    Err(AiError::Timeout(format!(
                        "no complete answer within {} s",
                        MAX_ANSWER_TIME.as_secs()
                    )))
                });
            match outcome {
                Ok(()) | Err(AiError::Abandoned) => {}
                Err(error) => {
                    tracing::warn!(message = "the analyst could not answer", %error);
                    // Bounded: a reader that stopped reading must not keep
                    // this task (and its answer slot) for ever.
                    let failed = tx.send(AskEvent::Failed(error.to_string()));
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), failed).await;
                }
            }
        });
        rx
    }

    fn analyse_alerts(&self, alerts: Vec<AlertRecord>) -> BoxFuture<Result<String, String>> {
        match &*self.backend {
            Backend::Model(m) => m.analyse(alerts),
            Backend::Offline(o) => o.analyse(alerts),
        }
    }

    fn model(&self) -> Option<String> {
        match &*self.backend {
            Backend::Model(m) => Some(m.model().to_string()),
            Backend::Offline(_) => None,
        }
    }
}
