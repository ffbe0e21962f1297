//! Outbound HTTP(S): one request over its own connection, with hyper's
//! HTTP/1.1 client over a TCP stream, wrapped in rustls (ring, the Mozilla
//! root certificates) for `https://`. The answer's body is read frame by
//! frame as it arrives, so a streamed answer (Server-Sent Events from a
//! model API) can be consumed before it ends.
//!
//! Used by the alerter's webhooks and the AI analyst's model client. Not
//! reqwest: its rustls support would either build aws-lc or need a crypto
//! provider installed before *any* reqwest client in the workspace is
//! built (Cargo unifies features), which the CLI's and tests' plain-HTTP
//! clients do not do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), netspectra_http::HttpError> {
//! let mut answer = netspectra_http::request(
//!     "POST",
//!     "https://hooks.example.com/x",
//!     &[("content-type", "application/json")],
//!     b"{}".to_vec(),
//! )
//! .await?;
//! while let Some(chunk) = answer.chunk().await? {
//!     println!("{} bytes", chunk.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Callers bound the time themselves (`tokio::time::timeout` around
//! [`request`] and each [`Response::chunk`]), since what is too slow
//! differs: a webhook's whole exchange, a stream's silence between events.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Why a request failed before an answer's status arrived, or while its
/// body was read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL or a header cannot be used.
    #[error("{0}")]
    Request(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The TLS handshake failed (certificate, name, protocol).
    #[error("{0}")]
    Tls(String),
    /// The exchange broke off or was not valid HTTP.
    #[error("{0}")]
    Protocol(String),
}

/// An answer whose body has not been read yet.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    body: Incoming,
    // Drives the connection while the body is read; stopped on drop.
    connection: JoinHandle<()>,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Response {
    /// The next piece of the body as it arrives (None: the body ended).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(HttpError::Protocol(format!("reading the answer: {e}")))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to read.
                }
            }
        }
    }

    /// The whole body, at most `max` bytes (more is an error: a bounded
    /// read of an answer expected to be small).
    pub async fn bytes(mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if out.len() + chunk.len() > max {
                return Err(HttpError::Protocol(format!(
                    "the answer is longer than {max} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A header's value as text (None when absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request (`method` `url`, extra `headers`, `body`) and returns
/// once the answer's status and headers arrived.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response, HttpError> {
    let Target {
        uri,
        https,
        host,
        port,
        authority,
    } = target(url)?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("netspectra/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpError::Request(format!("building the request: {e}")))?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| HttpError::Connect(format!("connecting to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = rustls::pki_types::ServerName::try_from(bare)
            .map_err(|e| HttpError::Tls(format!("TLS server name `{host}`: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Tls(format!("TLS with {host}: {e}")))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

/// Where a URL points.
struct Target {
    uri: hyper::Uri,
    https: bool,
    host: String,
    port: u16,
    /// The Host header: the authority without any `user:password@`.
    authority: String,
}

fn target(url: &str) -> Result<Target, HttpError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| HttpError::Request(format!("bad URL `{url}`: {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(HttpError::Request(format!(
                "bad URL `{url}`: it must start with http:// or https://"
            )))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| HttpError::Request(format!("bad URL `{url}`: no host")))?
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map_or_else(
        || host.clone(),
        |a| {
            a.as_str()
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_string()
        },
    );
    Ok(Target {
        uri,
        https,
        host,
        port,
        authority,
    })
}

/// Checks that `url` can be requested (`http://` or `https://` with a
/// host), so configuration errors show at start rather than at the first
/// request.
pub fn check_url(url: &str) -> Result<(), HttpError> {
    target(url).map(|_| ())
}

async fn send<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| HttpError::Protocol(format!("HTTP handshake: {e}")))?;
    let connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    match sender.send_request(request).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                connection,
            })
        }
        Err(e) => {
            connection.abort();
            Err(HttpError::Protocol(format!("sending the request: {e}")))
        }
    }
}

/// rustls with the ring provider and the Mozilla root certificates.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}
