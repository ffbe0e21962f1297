//! An HTTP/1.1 server (hyper) with the bounds a public listener needs, for
//! the query API and the roles' metrics endpoint alike: at most
//! `max_connections` connections, a deadline for each request head (which
//! also bounds how long an idle kept-alive connection is held), a maximum
//! connection age, and a graceful stop. `axum::serve` has none of these
//! knobs, and slow clients holding every connection is exactly the attack
//! a monitoring endpoint sees.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Bounds of one HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpBounds {
    /// Connections open at once; one more is closed as soon as accepted.
    pub max_connections: usize,
    /// Time a client has to send a complete request head, and the longest
    /// a kept-alive connection may sit idle.
    pub header_timeout: Duration,
    /// A connection is asked to close (after its current request) once
    /// this old, so no client keeps one forever; the request in progress
    /// then gets up to `max_age` more (a streamed answer).
    pub max_age: Duration,
    /// Requests in progress get this long to finish on stop; then the
    /// connection is closed.
    pub grace: Duration,
}

impl Default for HttpBounds {
    fn default() -> Self {
        HttpBounds {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
            grace: Duration::from_secs(5),
        }
    }
}

/// Serves `app` on `listener` within `bounds` until `shutdown` completes,
/// then lets the requests in progress finish (at most `bounds.grace`).
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    bounds: HttpBounds,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_buf_size(64 * 1024);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(message = "accept failed", error = %e);
                    // Out of descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                message = "connection refused: too many open",
                max = bounds.max_connections
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let aged = tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => false,
                () = tokio::time::sleep(bounds.max_age) => true,
            };
            conn.as_mut().graceful_shutdown();
            if aged {
                // Old: no new request on it, but the one in progress (a
                // streamed answer may take minutes) gets up to `max_age`
                // more, unless the server stops meanwhile.
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.wait_for(|s| *s) => {}
                    () = tokio::time::sleep(bounds.max_age) => return,
                }
            }
            let _ = tokio::time::timeout(bounds.grace, conn).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}
