//! The query API against stores filled from a generated capture: every
//! operation over HTTP and gRPC returns what the exact truth (computed here
//! from the decoded packets) predicts, on SQLite and on a real ClickHouse
//! server alike; bad and hostile input is refused with a 400 and changes
//! nothing; a token, when set, is required.

mod dashboard;
mod fixture;
mod grafana;
mod protection;
mod simplejson;
mod suite;

use netspectra_store::read::Reader;
use netspectra_store::{ClickHouseStore, SqliteStore, StoreUrl};
use netspectra_testkit::clickhouse::ClickHouseServer;

/// A SQLite store in a temporary directory holding `data`.
fn sqlite_with(data: &fixture::Data) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    // Twice (a re-evaluation): still one row each.
    store.record_alerts(&data.alerts(), None).unwrap();
    store.record_alerts(&data.alerts(), None).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_answers_match_the_truth_over_http_and_grpc() {
    let data = fixture::Data::generate();
    let (_dir, path) = sqlite_with(&data);
    let reader = Reader::open(&StoreUrl::Sqlite(path)).unwrap();
    let answers = suite::check_everything(reader, &data).await;
    assert!(answers.len() >= 15, "{} answers", answers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_answers_match_the_truth_and_sqlite() {
    let data = fixture::Data::generate();
    let (dir, path) = sqlite_with(&data);

    let server = ClickHouseServer::start();
    let url = match StoreUrl::parse(&server.url()).unwrap() {
        StoreUrl::ClickHouse(u) => u,
        other => panic!("{other:?}"),
    };
    let written = {
        let url = url.clone();
        let spool = dir.path().join("spool");
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let mut ch = ClickHouseStore::open(&url).unwrap().with_spool_dir(spool);
            data.write(&mut ch);
            ch.record_alerts(&data.alerts(), None).unwrap();
            // Recorded twice (a re-evaluation): still one row each.
            ch.record_alerts(&data.alerts(), None).unwrap();
            ch.flush().unwrap()
        })
        .await
        .unwrap()
    };
    assert_eq!(written.spooled_batches, 0, "everything reached ClickHouse");

    let on_sqlite =
        suite::check_everything(Reader::open(&StoreUrl::Sqlite(path)).unwrap(), &data).await;
    let on_clickhouse =
        suite::check_everything(Reader::open(&StoreUrl::ClickHouse(url)).unwrap(), &data).await;
    assert_eq!(on_sqlite.len(), on_clickhouse.len());
    for ((path, a), (_, b)) in on_sqlite.iter().zip(&on_clickhouse) {
        // Run ids are the backend's own (SQLite counts, ClickHouse uses time).
        assert_eq!(
            without_run_ids(a),
            without_run_ids(b),
            "SQLite and ClickHouse differ on {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required_except_for_health() {
    let data = fixture::Data::small();
    let (_dir, path) = sqlite_with(&data);
    let reader = Reader::open(&StoreUrl::Sqlite(path)).unwrap();
    suite::check_auth(reader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Reader::open(&StoreUrl::Sqlite(dir.path().join("none.db")));
    let err = missing.err().expect("a missing store is an error");
    assert!(err.to_string().contains("no NetSpectra store"), "{err}");
    // A ClickHouse store that is down: the API starts, reports not ready.
    let url = match StoreUrl::parse("clickhouse://127.0.0.1:9/ns").unwrap() {
        StoreUrl::ClickHouse(u) => u,
        other => panic!("{other:?}"),
    };
    suite::check_not_ready(Reader::open(&StoreUrl::ClickHouse(url)).unwrap()).await;
}

fn without_run_ids(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != "run_id")
            .map(|(k, v)| (k.clone(), without_run_ids(v)))
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(without_run_ids).collect(),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_follow_new_rows() {
    let data = fixture::Data::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    let api = suite::Api::start(Reader::open(&StoreUrl::Sqlite(path.clone())).unwrap(), None).await;
    let n = data.records.len() as u64;
    let total = |body: serde_json::Value| body["summaries"][0]["total_packets"].as_u64().unwrap();
    for _ in 0..2 {
        assert_eq!(
            total(api.get("/api/v1/aggregate?task=per_src_ip").await.1),
            n
        );
    }
    // A second analysis of the same traffic lands while the API runs.
    data.write(&mut store);
    assert_eq!(
        total(api.get("/api/v1/aggregate?task=per_src_ip").await.1),
        2 * n
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redefined_task_answers_from_its_current_definition_only() {
    let data = fixture::Data::small();
    let (_dir, path) = sqlite_with(&data);
    // Later runs key `per_src_ip` by destination instead.
    let mut store = SqliteStore::open(&path).unwrap();
    data.write_with(&mut store, |plan| {
        for t in plan.tasks.iter_mut().filter(|t| t.name == "per_src_ip") {
            t.key = vec![netspectra_model::Dimension::DstIp];
        }
    });
    let api = suite::Api::start(Reader::open(&StoreUrl::Sqlite(path)).unwrap(), None).await;
    let (_, tasks) = api.get("/api/v1/tasks").await;
    let def = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "per_src_ip")
        .unwrap()
        .clone();
    assert_eq!(def["key"], serde_json::json!(["DstIP"]));
    let (status, agg) = api.get("/api/v1/aggregate?task=per_src_ip").await;
    assert_eq!(status, 200, "{agg}");
    let destinations: std::collections::BTreeSet<_> =
        data.records.iter().map(|r| r.dst_ip).collect();
    assert_eq!(
        agg["summaries"][0]["total_packets"],
        serde_json::json!(data.records.len())
    );
    assert_eq!(
        agg["summaries"][0]["flow_count"],
        serde_json::json!(destinations.len())
    );
    let (_, top) = api.get("/api/v1/top?task=per_src_ip&limit=3").await;
    assert!(
        top["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key"]["DstIP"].is_string()),
        "{top}"
    );
    api.stop().await;
}
