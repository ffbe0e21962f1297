//! `deploy/grafana/`, without Grafana: every dashboard parses, every panel
//! and query names a provisioned datasource (uid and type), and every
//! panel's query runs over a generated capture: the SQL (Grafana's macros
//! and variables expanded as the ClickHouse plugin does) against a real
//! clickhouse-server, the Infinity URL against the API (with the token, as
//! provisioned). Answers must be non-empty and shaped as the panel expects;
//! some are compared with the packets' truth. The Prometheus panels run in
//! the cli crate's Prometheus test, against a real Prometheus.

use crate::fixture::Data;
use crate::suite::Api;
use netspectra_model::ip;
use netspectra_store::read::Reader;
use netspectra_store::{ClickHouseStore, StoreUrl};
use netspectra_testkit::clickhouse::ClickHouseServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOKEN: &str = "grafana-test-token";

fn grafana() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana")
}

fn yaml_files(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        out.push(v);
    }
    out
}

/// Provisioned datasources: uid -> type.
fn datasources() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for doc in yaml_files(&grafana().join("provisioning/datasources")) {
        assert_eq!(doc["apiVersion"], 1);
        for ds in doc["datasources"].as_array().unwrap() {
            let uid = ds["uid"].as_str().expect("every datasource has a uid");
            let kind = ds["type"].as_str().expect("and a type");
            assert!(
                m.insert(uid.to_string(), kind.to_string()).is_none(),
                "{uid} twice"
            );
        }
    }
    m
}

fn dashboards() -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = std::fs::read_dir(grafana().join("dashboards"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                doc,
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The ClickHouse plugin's macros and the dashboard's variables, expanded
/// for the range `[from, to]` (seconds).
fn expand_sql(sql: &str, from: u64, to: u64, vars: &BTreeMap<String, String>) -> String {
    let mut out = sql
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", "1");
    while let Some(at) = out.find("$__timeFilter(") {
        let rest = &out[at + "$__timeFilter(".len()..];
        let close = rest.find(')').expect("closed macro");
        let col = rest[..close].trim().to_string();
        let expanded = format!("{col} >= toDateTime({from}) AND {col} <= toDateTime({to})");
        out = format!("{}{expanded}{}", &out[..at], &rest[close + 1..]);
    }
    expand_vars(&out, vars)
}

fn expand_vars(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    assert!(!out.contains('$'), "unexpanded variable or macro in {out}");
    out
}

/// Runs SQL over HTTP; the `FORMAT JSON` answer (meta + data).
async fn clickhouse(http: &reqwest::Client, server: &ClickHouseServer, sql: &str) -> Value {
    let r = http
        .post(format!(
            "http://127.0.0.1:{}/?database={}",
            server.http_port(),
            server.database()
        ))
        .body(format!("{sql}\nFORMAT JSON"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "ClickHouse refuses\n{sql}\n{text}");
    serde_json::from_str(&text).unwrap()
}

/// `a.b.c` in `v`.
fn select<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|p| !p.is_empty())
        .fold(v, |v, p| &v[p])
}

fn datasource_of(v: &Value) -> (String, String) {
    (
        v["uid"].as_str().unwrap_or_default().to_string(),
        v["type"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grafana_panel_query_runs_and_answers() {
    let sources = datasources();
    assert_eq!(
        sources.values().map(String::as_str).collect::<Vec<_>>(),
        [
            "yesoreyeram-infinity-datasource",
            "grafana-clickhouse-datasource",
            "prometheus"
        ]
    );
    for doc in yaml_files(&grafana().join("provisioning/dashboards")) {
        for p in doc["providers"].as_array().unwrap() {
            assert_eq!(p["type"], "file");
            assert!(p["options"]["path"].as_str().unwrap().starts_with('/'));
        }
    }

    // The capture, in ClickHouse; the API over the same store, with a token.
    let data = Data::generate();
    let server = ClickHouseServer::start();
    let url = match StoreUrl::parse(&server.url()).unwrap() {
        StoreUrl::ClickHouse(u) => u,
        other => panic!("{other:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let (url, spool, data) = (url.clone(), dir.path().join("spool"), data.clone());
        tokio::task::spawn_blocking(move || {
            let mut ch = ClickHouseStore::open(&url).unwrap().with_spool_dir(spool);
            data.write(&mut ch);
            ch.record_alerts(&data.alerts(), None).unwrap();
            assert_eq!(ch.flush().unwrap().spooled_batches, 0);
        })
        .await
        .unwrap();
    }
    let api = Api::start(
        Reader::open(&StoreUrl::ClickHouse(url)).unwrap(),
        Some(TOKEN),
    )
    .await;
    let http = reqwest::Client::new();
    let t0 = data.t0() / 1_000_000_000;
    let (from, to) = (t0 - 3600, t0 + 3600);
    let iso = |s: u64| netspectra_model::time::format_rfc3339_ns(s * 1_000_000_000);

    let mut ran = BTreeMap::<String, usize>::new();
    let mut answers = BTreeMap::<String, Value>::new();
    let dashboards = dashboards();
    assert_eq!(
        dashboards.len(),
        5,
        "traffic, top talkers, sketches, alerts, pipeline"
    );
    let mut uids = std::collections::BTreeSet::new();
    for (file, dash) in &dashboards {
        assert!(
            uids.insert(dash["uid"].as_str().unwrap().to_string()),
            "{file}: uid twice"
        );
        assert!(dash["title"].as_str().unwrap().starts_with("NetSpectra"));

        // Variables: their queries run too; the first answer is their value.
        let mut vars = BTreeMap::new();
        vars.insert("__from:date:iso".to_string(), iso(from));
        vars.insert("__to:date:iso".to_string(), iso(to));
        vars.insert("__rate_interval".to_string(), "1m".to_string());
        for var in dash["templating"]["list"].as_array().unwrap() {
            let (uid, kind) = datasource_of(&var["datasource"]);
            assert_eq!(
                sources.get(&uid),
                Some(&kind),
                "{file}: variable datasource"
            );
            let sql = expand_sql(var["query"].as_str().unwrap(), from, to, &vars);
            let answer = clickhouse(&http, &server, &sql).await;
            let values: Vec<&str> = answer["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r.as_object()?.values().next()?.as_str())
                .collect();
            assert_eq!(values, ["per_dst_ip", "per_flow", "per_src_ip"], "{file}");
            let current = var["current"]["value"].as_str().unwrap();
            assert!(values.contains(&current), "{file}: default {current}");
            vars.insert(
                var["name"].as_str().unwrap().to_string(),
                current.to_string(),
            );
        }

        for panel in dash["panels"].as_array().unwrap() {
            let title = format!("{file}: {}", panel["title"].as_str().unwrap());
            let panel_ds = datasource_of(&panel["datasource"]);
            assert_eq!(
                sources.get(&panel_ds.0),
                Some(&panel_ds.1),
                "{title}: datasource"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title}: no query");
            for target in targets {
                let (uid, kind) = datasource_of(&target["datasource"]);
                assert_eq!(
                    (uid.clone(), kind.clone()),
                    panel_ds,
                    "{title}: query datasource"
                );
                match kind.as_str() {
                    "grafana-clickhouse-datasource" => {
                        let sql = expand_sql(target["rawSql"].as_str().unwrap(), from, to, &vars);
                        let answer = clickhouse(&http, &server, &sql).await;
                        let rows = answer["data"].as_array().unwrap();
                        assert!(!rows.is_empty(), "{title}: no rows\n{sql}");
                        if target["queryType"] == "timeseries" {
                            let meta = answer["meta"].as_array().unwrap();
                            assert_eq!(meta[0]["name"], "time", "{title}: time first");
                            assert!(
                                meta[0]["type"].as_str().unwrap().starts_with("DateTime"),
                                "{title}: {meta:?}"
                            );
                            assert!(
                                meta.iter()
                                    .skip(1)
                                    .any(|m| m["type"].as_str().unwrap().contains("Int")),
                                "{title}: a numeric column"
                            );
                        }
                        answers.insert(title.clone(), answer);
                    }
                    "yesoreyeram-infinity-datasource" => {
                        let path = target["url"].as_str().unwrap();
                        let params: Vec<(String, String)> = target["url_options"]["params"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| {
                                (
                                    p["key"].as_str().unwrap().to_string(),
                                    expand_vars(p["value"].as_str().unwrap(), &vars),
                                )
                            })
                            .collect();
                        assert_eq!(target["url_options"]["method"], "GET");
                        let columns = target["columns"].as_array().unwrap();
                        assert!(!columns.is_empty(), "{title}: columns");
                        let r = http
                            .get(format!("{}{path}", api.base))
                            .query(&params)
                            .bearer_auth(TOKEN)
                            .send()
                            .await
                            .unwrap();
                        let status = r.status();
                        let body: Value = r.json().await.unwrap();
                        assert!(status.is_success(), "{title}: {status} {body}");
                        let root = target["root_selector"].as_str().unwrap();
                        let rows = select(&body, root)
                            .as_array()
                            .unwrap_or_else(|| panic!("{title}: {root} in {body}"));
                        assert!(!rows.is_empty(), "{title}: no rows");
                        for row in rows {
                            for c in columns {
                                let v = select(row, c["selector"].as_str().unwrap());
                                let ok = match c["type"].as_str().unwrap() {
                                    // An alert's key is an object, shown as its JSON.
                                    "string" if c["selector"] == "key" => v.is_object(),
                                    "number" => v.is_u64() || v.is_f64() || v.is_i64(),
                                    "string" => v.is_string(),
                                    "timestamp" => v.as_str().is_some_and(|t| {
                                        netspectra_model::time::parse_rfc3339_ns(t).is_ok()
                                    }),
                                    other => panic!("{title}: column type {other}"),
                                };
                                assert!(ok, "{title}: column {c} in {row}");
                            }
                        }
                        answers.insert(title.clone(), body);
                    }
                    "prometheus" => {
                        assert!(
                            target["expr"]
                                .as_str()
                                .is_some_and(|e| e.contains("netspectra_") || e.contains("up{")),
                            "{title}"
                        );
                        continue; // run in crates/cli/tests/it/prometheus.rs
                    }
                    other => panic!("{title}: datasource type {other}"),
                }
                *ran.entry(kind).or_default() += 1;
            }
        }
    }
    assert!(ran["grafana-clickhouse-datasource"] >= 14, "{ran:?}");
    assert!(ran["yesoreyeram-infinity-datasource"] >= 4, "{ran:?}");

    // Some answers against the truth.
    let n = data.records.len() as u64;
    let stat = &answers["netspectra-traffic.json: Packets ($task)"]["data"][0]["packets"];
    assert_eq!(
        stat.as_str().and_then(|s| s.parse().ok()).or(stat.as_u64()),
        Some(n),
        "UInt64 is quoted in JSON"
    );
    let sources_truth = Data::by_source(data.records.iter());
    let top = sources_truth
        .iter()
        .max_by_key(|(k, s)| (s.bytes, std::cmp::Reverse(**k)))
        .unwrap();
    let sql_top =
        &answers["netspectra-top-talkers.json: Top sources by bytes (per_src_ip)"]["data"][0];
    assert_eq!(sql_top["source"], ip::to_string(top.0));
    let api_top =
        &answers["netspectra-top-talkers.json: Top sources by bytes (from the API)"]["rows"][0];
    assert_eq!(api_top["key"]["SrcIP"], ip::to_string(top.0));
    assert_eq!(api_top["bytes"], top.1.bytes);
    let series =
        &answers["netspectra-traffic.json: Packets per window ($task, from the API)"]["rows"];
    let total: u64 = series
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(total, n);
    // The runs' decode counters come back from ClickHouse as recorded.
    let (_, runs) = api.get("/api/v1/runs").await;
    let decoded: u64 = runs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["decoded"]["ip"].as_u64().unwrap())
        .sum();
    assert_eq!(decoded, n, "{runs}");
    api.stop().await;
}
