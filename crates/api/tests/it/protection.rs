//! The API protects itself and the store (#16 finding 2), over real HTTP
//! and gRPC on loopback: no open listener on the network without a token,
//! load shedding with 503 + Retry-After, request and header timeouts, a
//! connection limit, row caps on `runs`, health that neither runs
//! unbounded queries nor tells strangers the store's errors, and SQL
//! errors as 500.

use crate::fixture;
use netspectra_api::pb::query_service_client::QueryServiceClient;
use netspectra_api::{pb, serve, Limits, Running, ServeError, ServeOptions};
use netspectra_store::read::Reader;
use netspectra_store::{SqliteStore, StoreUrl};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback() -> Option<std::net::SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

async fn start(path: &Path, limits: Limits, token: Option<&str>) -> Running {
    serve(
        Reader::open(&StoreUrl::Sqlite(path.to_path_buf())).unwrap(),
        ServeOptions {
            grpc: loopback(),
            http: loopback(),
            token: token.map(str::to_string),
            limits,
            insecure_no_auth: false,
            analyst: None,
        },
    )
    .await
    .unwrap()
}

async fn get(
    running: &Running,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req =
        reqwest::Client::new().get(format!("http://{}{path}", running.http_addr.unwrap()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, retry, body)
}

/// A store with `runs` runs, switched to a rollback journal so that a
/// writer's exclusive lock makes every reader wait (a slow question on
/// demand).
fn store(dir: &Path, runs: usize) -> std::path::PathBuf {
    let path = dir.join("ns.db");
    let data = fixture::Data::small();
    let mut store = SqliteStore::open(&path).unwrap();
    for _ in 0..runs.div_ceil(2) {
        data.write(&mut store);
    }
    drop(store);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .unwrap();
    path
}

/// Holds an exclusive lock on the store until dropped.
fn lock(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; INSERT INTO runs (engine_id, command, started_at_ns, status, inputs) VALUES ('x','lock',1,'running','[]');")
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_is_served_unless_insecure_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 1);
    let reader = || Reader::open(&StoreUrl::Sqlite(path.clone())).unwrap();
    for open in ["0.0.0.0:0", "[::]:0"] {
        let options = ServeOptions {
            http: Some(open.parse().unwrap()),
            ..ServeOptions::default()
        };
        match serve(reader(), options.clone()).await {
            Err(e @ ServeError::OpenToNetwork { .. }) => {
                assert!(e.to_string().contains("--insecure-no-auth"), "{e}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("{open} without a token must be refused"),
        }
        let grpc_only = ServeOptions {
            grpc: Some(open.parse().unwrap()),
            ..ServeOptions::default()
        };
        assert!(serve(reader(), grpc_only).await.is_err(), "gRPC too");
        if open.starts_with('[') && std::net::TcpListener::bind("[::]:0").is_err() {
            continue; // no IPv6 here
        }
        for allowed in [
            ServeOptions {
                insecure_no_auth: true,
                ..options.clone()
            },
            ServeOptions {
                token: Some("t".into()),
                ..options.clone()
            },
        ] {
            let running = serve(reader(), allowed).await.unwrap();
            running.stop();
            running.wait().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_questions_at_once_are_shed_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 2);
    let limits = Limits {
        max_in_flight: 1,
        request_timeout: Duration::from_secs(20),
        cache_entries: 0,
        ..Limits::default()
    };
    let running = std::sync::Arc::new(start(&path, limits, None).await);
    let held = lock(&path);
    // One question waits on the lock and holds the only slot...
    let slow = {
        let running = running.clone();
        tokio::spawn(async move { get(&running, "/api/v1/runs", None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so the next ones, HTTP and gRPC, are refused at once.
    let t = Instant::now();
    let (status, retry, body) = get(&running, "/api/v1/runs", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(t.elapsed() < Duration::from_secs(2), "shed, not queued");
    let mut grpc = QueryServiceClient::connect(format!("http://{}", running.grpc_addr.unwrap()))
        .await
        .unwrap();
    let err = grpc
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(err.metadata().get("retry-after").unwrap(), "1");
    // Health answers all the same (it takes no slot).
    assert_eq!(get(&running, "/healthz", None).await.0, 200);
    drop(held);
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&running, "/api/v1/runs", None).await.0,
        200,
        "slot freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_that_takes_too_long_is_abandoned() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 2);
    let limits = Limits {
        request_timeout: Duration::from_millis(700),
        cache_entries: 0,
        ..Limits::default()
    };
    let running = start(&path, limits, None).await;
    let held = lock(&path);
    let t = Instant::now();
    let (status, retry, body) = get(&running, "/api/v1/runs", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut grpc = QueryServiceClient::connect(format!("http://{}", running.grpc_addr.unwrap()))
        .await
        .unwrap();
    let err = grpc
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 1);
    let limits = Limits {
        max_connections: 2,
        header_timeout: Duration::from_millis(800),
        ..Limits::default()
    };
    let running = start(&path, limits, None).await;
    let addr = running.http_addr.unwrap();
    // Two clients that never finish their request head take both slots.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third is closed at once rather than queued behind them.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("closed, not left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // The slow ones are dropped after the head timeout...
    for mut s in idle {
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the server closes a slow client");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
    // ...and the server answers again.
    assert_eq!(get(&running, "/healthz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_capped_and_newest_first_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 4);
    let limits = Limits {
        max_rows: 3,
        default_rows: 2,
        ..Limits::default()
    };
    let running = start(&path, limits, None).await;
    let ids = |body: &serde_json::Value| -> Vec<i64> {
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_i64().unwrap())
            .collect()
    };
    let (status, _, body) = get(&running, "/api/v1/runs", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (ids(&body), body["truncated"].clone()),
        (vec![3, 4], true.into())
    );
    let (_, _, body) = get(&running, "/api/v1/runs?limit=0", None).await;
    assert_eq!(ids(&body), vec![2, 3, 4], "0 = the server's maximum");
    let (status, _, body) = get(&running, "/api/v1/runs?limit=4", None).await;
    assert_eq!(status, 400, "{body}");
    let mut grpc = QueryServiceClient::connect(format!("http://{}", running.grpc_addr.unwrap()))
        .await
        .unwrap();
    let a = grpc
        .list_runs(pb::ListRunsRequest { limit: Some(1) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.rows.iter().map(|r| r.run_id).collect::<Vec<_>>(), vec![4]);
    assert!(a.truncated);
    let err = grpc
        .list_runs(pb::ListRunsRequest { limit: Some(10) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_error_is_a_500_not_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 2);
    // A damaged store: the rows table lost its columns.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("DROP TABLE exact_rows; CREATE TABLE exact_rows (x INTEGER);")
        .unwrap();
    drop(c);
    let running = start(&path, Limits::default(), None).await;
    let (status, retry, body) = get(&running, "/api/v1/top?task=per_src_ip", None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert_eq!(retry, None, "asking again will not help");
    let mut grpc = QueryServiceClient::connect(format!("http://{}", running.grpc_addr.unwrap()))
        .await
        .unwrap();
    let err = grpc
        .top_keys(pb::TopKeysRequest {
            task_name: "per_src_ip".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    // The store itself answers: ready.
    assert_eq!(get(&running, "/readyz", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tells_strangers_nothing_about_the_store() {
    // Nothing listens on port 9: the store is down.
    let url = StoreUrl::parse("clickhouse://u:hunter2@127.0.0.1:9/ns").unwrap();
    let running = serve(
        Reader::open(&url).unwrap(),
        ServeOptions {
            grpc: loopback(),
            http: loopback(),
            token: Some("s3cret".into()),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap();
    for path in ["/readyz", "/api/v1/health"] {
        let (status, _, body) = get(&running, path, None).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(
            body["error"]["message"], "store unavailable",
            "{path}: {body}"
        );
        let (_, _, body) = get(&running, path, Some("wrong")).await;
        assert_eq!(
            body["error"]["message"], "store unavailable",
            "{path}: {body}"
        );
        let (status, _, body) = get(&running, path, Some("s3cret")).await;
        assert_eq!(status, 503);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.len() > "store unavailable".len(), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
    let mut grpc = QueryServiceClient::connect(format!("http://{}", running.grpc_addr.unwrap()))
        .await
        .unwrap();
    let status = grpc
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, "unavailable");
    running.stop();
    running.wait().await.unwrap();
}
