//! The query API against stores filled from a generated capture: every
//! operation over HTTP and gRPC returns what the exact truth (computed here
//! from the decoded packets) predicts, on SQLite and on a real ClickHouse
//! server alike; bad and hostile input is refused with a 400 and changes
//! nothing; a token, when set, is required.

mod ai;
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

/// Two writes of the same traffic (runs 1–2, then 3–4: one per engine,
/// even sources in the first, odd in the second), the first write
/// replaced, as a re-analysis does.
fn written_twice_first_replaced(
    store: &mut dyn netspectra_store::Store,
    data: &fixture::Data,
) -> Vec<i64> {
    data.write(store);
    data.write(store);
    let ids: Vec<i64> = store.runs().unwrap().iter().map(|r| r.run_id).collect();
    assert_eq!(ids.len(), 4);
    store.replace_run(ids[0]).unwrap();
    store.replace_run(ids[1]).unwrap();
    ids
}

/// `run` over HTTP and gRPC against the truth: all = every kept run,
/// latest = the newest run, an id = that run, a replaced run = nothing.
/// Returns the HTTP answers (run ids written as `#n`, the run's index).
async fn check_run_selection(
    reader: Reader,
    data: &fixture::Data,
    ids: &[i64],
) -> Vec<serde_json::Value> {
    use netspectra_api::pb;
    let mut api = suite::Api::start(reader, None).await;
    let n = data.records.len() as u64;
    let odd = data
        .records
        .iter()
        .filter(|r| r.src_ip[15] % 2 == 1)
        .count() as u64;
    let packets =
        |body: &serde_json::Value| body["summaries"][0]["total_packets"].as_u64().unwrap();
    let mut answers = Vec::new();
    let cases = [
        ("".to_string(), n),
        ("&run=all".to_string(), n),
        ("&run=latest".to_string(), odd),
        (format!("&run={}", ids[2]), n - odd),
        (format!("&run={}", ids[3]), odd),
        (format!("&run={}", ids[0]), 0),
    ];
    for (param, want) in &cases {
        let (status, body) = api
            .get(&format!("/api/v1/aggregate?task=per_src_ip{param}"))
            .await;
        assert_eq!(status, 200, "{param}: {body}");
        assert_eq!(packets(&body), *want, "aggregate{param}: {body}");
        let (_, top) = api
            .get(&format!("/api/v1/top?task=per_src_ip&limit=0{param}"))
            .await;
        let sum: u64 = top["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["packets"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, *want, "top{param}");
        answers.push(body);
        answers.push(top);
    }
    let (_, hh) = api
        .get("/api/v1/heavy-hitters?task=per_src_ip_hh&run=latest&limit=0")
        .await;
    assert!(
        hh["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key"]["SrcIP"]
                .as_str()
                .unwrap()
                .ends_with(['1', '3', '5', '7', '9'])),
        "the latest run holds odd sources only: {hh}"
    );
    answers.push(hh);
    let (status, body) = api.get("/api/v1/top?task=per_src_ip&run=newest").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("run"),
        "{body}"
    );
    let (_, tasks) = api.get("/api/v1/tasks").await;
    assert!(
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["run_id"] == ids[3]),
        "{tasks}"
    );
    // gRPC takes the same `run`.
    let grpc = api
        .grpc
        .aggregate_flows(pb::AggregationRequest {
            task_name: "per_src_ip".into(),
            run: "latest".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.summaries[0].total_packets, odd);
    let bad = api
        .grpc
        .top_keys(pb::TopKeysRequest {
            task_name: "per_src_ip".into(),
            run: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    api.stop().await;
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_selects_runs_and_a_replaced_run_is_never_read_on_both_stores() {
    let data = fixture::Data::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let ids = written_twice_first_replaced(&mut SqliteStore::open(&path).unwrap(), &data);
    let runs = SqliteStore::open(&path).unwrap().runs().unwrap();
    assert_eq!(runs[0].status, "replaced");
    let on_sqlite =
        check_run_selection(Reader::open(&StoreUrl::Sqlite(path)).unwrap(), &data, &ids).await;

    let server = ClickHouseServer::start();
    let url = match StoreUrl::parse(&server.url()).unwrap() {
        StoreUrl::ClickHouse(u) => u,
        other => panic!("{other:?}"),
    };
    let ch_ids = {
        let url = url.clone();
        let spool = dir.path().join("spool");
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let mut ch = ClickHouseStore::open(&url).unwrap().with_spool_dir(spool);
            let ids = written_twice_first_replaced(&mut ch, &data);
            assert_eq!(ch.flush().unwrap().spooled_batches, 0);
            ids
        })
        .await
        .unwrap()
    };
    let on_clickhouse = check_run_selection(
        Reader::open(&StoreUrl::ClickHouse(url)).unwrap(),
        &data,
        &ch_ids,
    )
    .await;
    assert_eq!(on_sqlite.len(), on_clickhouse.len());
    for (a, b) in on_sqlite.iter().zip(&on_clickhouse) {
        assert_eq!(
            without_run_ids(a),
            without_run_ids(b),
            "SQLite and ClickHouse differ"
        );
    }
}

/// A sketch task that has stored no estimate yet still shows its algorithm
/// (from its definition), on both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sketch_task_without_rows_shows_its_algorithm_on_both_stores() {
    use netspectra_model::config::Config;
    let config = Config::from_yaml(
        "aggregator:\n  sketch:\n    tasks:\n      - {name: buckets, algorithm: hh, key: [SrcIP]}\n      - {name: spread, skt_type: 1, key: [SrcIP], element_key: [DstIP]}\n",
        &|_| None,
    )
    .unwrap();
    let plan = netspectra_engine::EnginePlan::from_config(&config, 1).unwrap();
    let begin = |store: &mut dyn netspectra_store::Store| {
        store
            .begin_run(
                "e",
                "test",
                &serde_json::json!([]),
                &plan.tasks,
                plan.window_ns,
            )
            .unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    begin(&mut SqliteStore::open(&path).unwrap());
    let server = ClickHouseServer::start();
    let url = match StoreUrl::parse(&server.url()).unwrap() {
        StoreUrl::ClickHouse(u) => u,
        other => panic!("{other:?}"),
    };
    {
        let url = url.clone();
        let spool = dir.path().join("spool");
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || {
            let mut ch = ClickHouseStore::open(&url).unwrap().with_spool_dir(spool);
            ch.begin_run(
                "e",
                "test",
                &serde_json::json!([]),
                &plan.tasks,
                plan.window_ns,
            )
            .unwrap();
            assert_eq!(ch.flush().unwrap().spooled_batches, 0);
        })
        .await
        .unwrap();
    }
    for reader in [
        Reader::open(&StoreUrl::Sqlite(path)).unwrap(),
        Reader::open(&StoreUrl::ClickHouse(url)).unwrap(),
    ] {
        let api = suite::Api::start(reader, None).await;
        let (_, tasks) = api.get("/api/v1/tasks").await;
        let algorithm = |name: &str| {
            tasks["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .map(|t| t["algorithm"].clone())
        };
        assert_eq!(
            algorithm("buckets"),
            Some(serde_json::json!("hh")),
            "{tasks}"
        );
        assert_eq!(
            algorithm("spread"),
            Some(serde_json::json!("superspread")),
            "{tasks}"
        );
        // Operations of the other kind are refused by name, with an article that fits.
        let (status, body) = api.get("/api/v1/super-spreaders?task=buckets").await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is an hh task"),
            "{body}"
        );
        api.stop().await;
    }
}
