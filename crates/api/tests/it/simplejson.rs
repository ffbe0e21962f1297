//! The Grafana SimpleJSON face: `search` lists the exact tasks, `query`
//! answers one point per stored window (the truth's per-window sums, from
//! the packets), within `range`, thinned to `maxDataPoints`; the legacy
//! `/query` answers the same; bad bodies are 400s; the token guards it.

use crate::fixture::{Data, WINDOW_NS};
use crate::suite::Api;
use netspectra_store::read::Reader;
use netspectra_store::{SqliteStore, StoreUrl};
use serde_json::{json, Value};

async fn post(api: &Api, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", api.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn rfc3339(ns: u64) -> String {
    netspectra_model::time::format_rfc3339_ns(ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simplejson_answers_real_time_series() {
    let data = Data::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    let api = Api::start(Reader::open(&StoreUrl::Sqlite(path)).unwrap(), None).await;

    let test = reqwest::get(format!("{}/grafana/", api.base))
        .await
        .unwrap();
    assert_eq!(test.status(), 200, "test connection");

    let (status, names) = post(&api, "/grafana/search", "{}", None).await;
    assert_eq!(status, 200);
    assert_eq!(names, json!(["per_dst_ip", "per_flow", "per_src_ip"]));
    let (_, some) = post(&api, "/grafana/search", r#"{"target":"src"}"#, None).await;
    assert_eq!(some, json!(["per_src_ip"]));
    let (_, legacy) = post(&api, "/search", "", None).await;
    assert_eq!(legacy, names);

    // Every window, packets and bytes, as the truth has them.
    let series = Data::series(data.records.iter());
    let want = |bytes: bool| -> Value {
        series
            .iter()
            .map(|(w, (s, _))| json!([if bytes { s.bytes } else { s.packets }, w / 1_000_000]))
            .collect()
    };
    let body = json!({
        "range": {"from": "2000-01-01T00:00:00.000Z", "to": "2100-01-01T00:00:00.000Z"},
        "targets": [{"target": "per_src_ip", "refId": "A"}, {"target": "per_flow:bytes", "refId": "B"}, {"target": ""}],
        "maxDataPoints": 1000
    })
    .to_string();
    let (status, answer) = post(&api, "/grafana/query", &body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(answer[0]["target"], "per_src_ip");
    assert!(series.len() > 2, "several windows");
    assert_eq!(answer[0]["datapoints"], want(false));
    assert_eq!(answer[1]["target"], "per_flow:bytes");
    assert_eq!(answer[1]["datapoints"], want(true));
    // The legacy route answers the same.
    let (_, legacy) = post(&api, "/query", &body, None).await;
    assert_eq!(legacy, answer);

    // A range keeps its windows only.
    let t0 = data.t0();
    let (from, to) = (t0 + WINDOW_NS, t0 + 3 * WINDOW_NS);
    let body = json!({"range": {"from": rfc3339(from), "to": rfc3339(to)}, "targets": [{"target": "per_src_ip"}]});
    let (_, part) = post(&api, "/grafana/query", &body.to_string(), None).await;
    let sub: Value = Data::series(data.in_range(from, to))
        .iter()
        .map(|(w, (s, _))| json!([s.packets, w / 1_000_000]))
        .collect();
    assert_eq!(part[0]["datapoints"], sub);
    assert_eq!(sub.as_array().unwrap().len(), 2);

    // maxDataPoints: fewer points, the same total.
    let body = json!({"targets": [{"target": "per_src_ip"}], "maxDataPoints": 2});
    let (_, thin) = post(&api, "/grafana/query", &body.to_string(), None).await;
    let pts = thin[0]["datapoints"].as_array().unwrap();
    assert!(pts.len() <= 2, "{thin}");
    let total: u64 = pts.iter().map(|p| p[0].as_u64().unwrap()).sum();
    assert_eq!(total, data.records.len() as u64);

    // Bad input: a 400 naming the problem.
    for (body, needle) in [
        ("not json", "query body"),
        (r#"{"targets":[{"target":"nope"}]}"#, "nope"),
        (r#"{"targets":[{"target":"per_src_ip:volts"}]}"#, "volts"),
        (
            r#"{"targets":[{"target":"per_src_ip"}],"range":{"from":"yesterday"}}"#,
            "range.from",
        ),
        (
            r#"{"targets":[{"target":"per_src_ip_hh"}]}"#,
            "per_src_ip_hh",
        ),
    ] {
        let (status, err) = post(&api, "/grafana/query", body, None).await;
        assert!(status == 400 || status == 404, "{body}: {status} {err}");
        let msg = err["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {err}");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simplejson_needs_the_token_when_one_is_set() {
    let data = Data::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    let api = Api::start(Reader::open(&StoreUrl::Sqlite(path)).unwrap(), Some("tok")).await;
    let body = r#"{"targets":[{"target":"per_src_ip"}]}"#;
    for path in ["/grafana/query", "/query", "/grafana/search"] {
        assert_eq!(post(&api, path, body, None).await.0, 401, "{path}");
        assert_eq!(post(&api, path, body, Some("bad")).await.0, 401, "{path}");
        assert_eq!(post(&api, path, body, Some("tok")).await.0, 200, "{path}");
    }
    api.stop().await;
}
