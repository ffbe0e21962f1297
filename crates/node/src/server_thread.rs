//! A server on a thread of its own, with its own tokio runtime, so the
//! synchronous roles keep their shape: spawned, reporting where it is bound
//! (or why it cannot be), then stopped gracefully and joined. The query API
//! ([`crate::api::ApiServer`]) and the AI gateway ([`crate::ai::AiGateway`])
//! run this way.

use crate::error::{Context, NodeError};
use netspectra_api::ServeError;
use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Where the body reports once bound, or why it could not start.
pub(crate) type Ready<R> = mpsc::Sender<Result<R, NodeError>>;

/// The running thread.
pub(crate) struct ServerThread {
    what: &'static str,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl ServerThread {
    /// Runs `body(ready, stop)` on thread `name` with a 2-worker runtime
    /// (`what` names the server in errors) and returns once the body
    /// reported on `ready`. The body serves until `stop` resolves (or its
    /// sender is dropped).
    pub(crate) fn spawn<R, F, Fut>(
        name: &str,
        what: &'static str,
        body: F,
    ) -> Result<(ServerThread, R), NodeError>
    where
        R: Send + 'static,
        F: FnOnce(Ready<R>, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ServeError>>,
    {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let runtime_name = format!("{name}-rt");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(runtime_name)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(NodeError::Failed {
                            context: format!("cannot start the {what} runtime"),
                            cause: e.to_string(),
                        }));
                        return Ok(());
                    }
                };
                let result = rt.block_on(body(ready_tx, stop_rx));
                rt.shutdown_timeout(Duration::from_secs(1));
                result
            })
            .context(format!("cannot start the {what} thread"))?;
        let server = ServerThread {
            what,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(bound)) => Ok((server, bound)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NodeError::invalid(format!(
                "the {what} thread stopped before serving"
            ))),
        }
    }

    /// Whether the thread ended on its own (a server failure).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Asks the body to stop and joins the thread; its outcome.
    pub(crate) fn shutdown(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServeError::Failed {
                what: self.what,
                message: "its thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(message = "server failed", server = self.what, %error);
        }
    }
}
