//! [`RemoteAnalyst`]: an [`Analyst`] that asks an `ai` role over
//! `netspectra.v1.AnalystService`, so alerters (and other roles) need no
//! model configuration of their own: `alerter.ai_analysis.service_addr`
//! names the gateway.

use super::alerts;
use super::native::event_from_pb;
use crate::analyst::{Analyst, AskEvent, BoxFuture};
use crate::pb;
use crate::pb::analyst_service_client::AnalystServiceClient;
use netspectra_model::alert::AlertRecord;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Time to open the connection (answers themselves are bounded by the
/// caller and the server).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events buffered between the stream and the caller.
const EVENTS: usize = 32;

/// Why a [`RemoteAnalyst`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The address is not `host:port` or an `http://` URL.
    #[error("`{addr}` is not an AI service address (use host:port or http://host:port): {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// What is wrong.
        reason: String,
    },
    /// The token cannot go into a header.
    #[error("the API token holds characters a header cannot carry")]
    Token,
}

/// Asks a remote `netspectra ai`. Connects lazily (the gateway may start
/// after its clients) and again after a failure.
#[derive(Clone)]
pub struct RemoteAnalyst {
    client: AnalystServiceClient<Channel>,
    token: Option<MetadataValue<Ascii>>,
    addr: Arc<str>,
    runtime: tokio::runtime::Handle,
    /// The model the gateway last reported (its analyses say which).
    model: Arc<Mutex<Option<String>>>,
}

impl RemoteAnalyst {
    /// An analyst asking the gateway at `addr` (`host:port`, as the
    /// reference's `service_addr`, or `http://host:port`) with the bearer
    /// `token`. Call it inside a tokio runtime: the connection and the
    /// answers run there.
    pub fn connect(addr: &str, token: Option<&str>) -> Result<RemoteAnalyst, RemoteError> {
        let bad = |reason: String| RemoteError::Address {
            addr: addr.to_string(),
            reason,
        };
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| bad("no tokio runtime to connect from".into()))?;
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        let token = token
            .filter(|t| !t.is_empty())
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| RemoteError::Token)
            })
            .transpose()?;
        Ok(RemoteAnalyst {
            client: AnalystServiceClient::new(channel),
            token,
            addr: Arc::from(addr),
            runtime,
            model: Arc::new(Mutex::new(None)),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }
}

/// A status as the analyst's failure message, naming the gateway.
fn describe(addr: &str, status: &tonic::Status) -> String {
    format!(
        "AI service {addr}: {} ({:?})",
        status.message(),
        status.code()
    )
}

impl Analyst for RemoteAnalyst {
    fn ask(&self, question: String) -> mpsc::Receiver<AskEvent> {
        let (tx, rx) = mpsc::channel(EVENTS);
        let mut client = self.client.clone();
        let req = self.request(pb::AskRequest { question });
        let addr = self.addr.clone();
        self.runtime.spawn(async move {
            let fail = |m: String| async { tx.send(AskEvent::Failed(m)).await };
            let mut stream = match client.ask(req).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    let _ = fail(describe(&addr, &status)).await;
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let Some(event) = event_from_pb(message) else {
                            continue;
                        };
                        let last = matches!(event, AskEvent::Done { .. } | AskEvent::Failed(_));
                        // A dropped receiver abandons the answer (and the
                        // stream, dropped here, cancels it on the server).
                        if tx.send(event).await.is_err() || last {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = fail(format!("AI service {addr}: the answer ended early")).await;
                        return;
                    }
                    Err(status) => {
                        let _ = fail(describe(&addr, &status)).await;
                        return;
                    }
                }
            }
        });
        rx
    }

    fn analyse_alerts(&self, found: Vec<AlertRecord>) -> BoxFuture<Result<String, String>> {
        let mut client = self.client.clone();
        let req = self.request(pb::AnalyzeAlertRequest {
            alerts: found.iter().map(alerts::to_pb).collect(),
        });
        let addr = self.addr.clone();
        let model = self.model.clone();
        Box::pin(async move {
            let answer = client
                .analyze_alert(req)
                .await
                .map_err(|status| describe(&addr, &status))?
                .into_inner();
            *model.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(answer.model).filter(|m| !m.is_empty());
            Ok(answer.analysis)
        })
    }

    /// The model the gateway named in its last analysis (None before the
    /// first, and when its offline analyst answers).
    fn model(&self) -> Option<String> {
        self.model.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
