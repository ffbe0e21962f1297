//! One error type for every role: the libraries' errors as they are, plus
//! invalid settings and failures with what was being done.

use std::fmt::Display;

/// Why a role could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration file is wrong.
    #[error(transparent)]
    Config(#[from] netspectra_model::config::ConfigError),
    /// The engine could not run.
    #[error(transparent)]
    Engine(#[from] netspectra_engine::EngineError),
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] netspectra_store::StoreError),
    /// A capture could not be opened or read.
    #[error(transparent)]
    Capture(#[from] netspectra_capture::reader::CaptureError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] netspectra_bus::BusError),
    /// The query API could not serve.
    #[error(transparent)]
    Serve(#[from] netspectra_api::ServeError),
    /// A setting is invalid or settings contradict each other (a usage error).
    #[error("{0}")]
    Invalid(String),
    /// Something failed while doing what `context` says; the cause's text is
    /// part of the message (and not repeated as a source).
    #[error("{context}: {cause}")]
    Failed {
        /// What was being done.
        context: String,
        /// Why it failed.
        cause: String,
    },
}

impl NodeError {
    /// An invalid setting, described for the user.
    pub fn invalid(message: impl Into<String>) -> NodeError {
        NodeError::Invalid(message.into())
    }
}

/// `.context("doing x")` on any result whose error can be shown.
pub(crate) trait Context<T> {
    /// Names what was being done when the error happened.
    fn context(self, context: impl Display) -> Result<T, NodeError>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, context: impl Display) -> Result<T, NodeError> {
        self.map_err(|e| NodeError::Failed {
            context: context.to_string(),
            cause: e.to_string(),
        })
    }
}
