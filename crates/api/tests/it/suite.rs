//! The checks, run against any store: each answer against the truth, gRPC
//! against HTTP, hostile input against an unchanged store.

use crate::fixture::{Data, Sums, WINDOW_NS};
use netspectra_api::pb::query_service_client::QueryServiceClient;
use netspectra_api::{pb, serve, Running, ServeOptions};
use netspectra_model::ip;
use netspectra_model::time::format_rfc3339_ns;
use netspectra_store::read::Reader;
use serde_json::{json, Value};
use std::collections::HashMap;
use tonic::transport::Channel;

pub struct Api {
    pub base: String,
    pub grpc: QueryServiceClient<Channel>,
    http: reqwest::Client,
    running: Running,
    token: Option<String>,
}

impl Api {
    pub async fn start(reader: Reader, token: Option<&str>) -> Api {
        let options = ServeOptions {
            token: token.map(str::to_string),
            ..ServeOptions::default()
        };
        Api::start_with(reader, options).await
    }

    /// Serves `reader` with `options` (token, analyst, …) on free loopback
    /// ports.
    pub async fn start_with(reader: Reader, options: ServeOptions) -> Api {
        let token = options.token.clone();
        let running = serve(
            reader,
            ServeOptions {
                grpc: Some("127.0.0.1:0".parse().unwrap()),
                http: Some("127.0.0.1:0".parse().unwrap()),
                ..options
            },
        )
        .await
        .unwrap();
        let grpc = QueryServiceClient::connect(format!("http://{}", running.grpc_addr.unwrap()))
            .await
            .unwrap();
        Api {
            base: format!("http://{}", running.http_addr.unwrap()),
            grpc,
            http: reqwest::Client::new(),
            running,
            token,
        }
    }

    /// GET with the server's token (if any); status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, self.token.as_deref()).await
    }

    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text}"));
        (status, body)
    }

    pub async fn stop(self) {
        self.running.stop();
        self.running.wait().await.unwrap();
    }
}

/// gRPC request carrying `token`.
pub(crate) fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// The services gRPC reflection lists on `channel`, asked with `token`
/// (the status when refused).
pub(crate) async fn reflected_services(
    channel: Channel,
    token: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(req(tokio_stream::iter([list]), token))
        .await?
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await?.and_then(|a| a.message_response)
    else {
        panic!("no service list");
    };
    Ok(list.service.into_iter().map(|s| s.name).collect())
}

fn ts(ns: u64) -> Value {
    json!(format_rfc3339_ns(ns))
}

fn stamp_text(t: &Option<prost_types::Timestamp>) -> Value {
    let t = t.as_ref().expect("timestamp set");
    ts(t.seconds as u64 * 1_000_000_000 + t.nanos as u64)
}

/// A key object with every value as text (how gRPC carries keys).
fn key_text(key: &Value) -> Value {
    let obj = key.as_object().expect("key object");
    Value::Object(
        obj.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                )
            })
            .collect(),
    )
}

/// An HTTP answer's rows with every key value as text, as gRPC carries them.
fn rows_with_text_keys(http: &Value) -> Vec<Value> {
    http["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["key"] = key_text(&r["key"]);
            r
        })
        .collect()
}

fn map_json(m: &HashMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// Truth rows of an exact task ranked as the store ranks them.
fn ranked<K: Ord + Clone>(
    truth: &std::collections::BTreeMap<K, Sums>,
    by_bytes: bool,
) -> Vec<(K, Sums)> {
    let mut v: Vec<(K, Sums)> = truth.iter().map(|(k, s)| (k.clone(), *s)).collect();
    v.sort_by(|(ka, a), (kb, b)| {
        let (x, y) = if by_bytes {
            ((b.bytes, b.packets), (a.bytes, a.packets))
        } else {
            ((b.packets, b.bytes), (a.packets, a.bytes))
        };
        x.cmp(&y).then(ka.cmp(kb))
    });
    v
}

fn source_row(ip16: &[u8; 16], s: &Sums) -> Value {
    json!({"key": {"SrcIP": ip::to_string(ip16)}, "packets": s.packets, "bytes": s.bytes,
           "first_seen": format_rfc3339_ns(s.first), "last_seen": format_rfc3339_ns(s.last)})
}

/// The row without the fields the truth does not predict (`windows`).
fn strip(mut row: Value) -> Value {
    row.as_object_mut().unwrap().remove("windows");
    row
}

fn in_10_slash_12(a: &[u8; 16]) -> bool {
    ip::is_v4(a) && a[12] == 10 && a[13] < 16
}

/// Runs every check; returns each (request, answer) for comparing backends.
pub async fn check_everything(reader: Reader, data: &Data) -> Vec<(String, Value)> {
    let mut api = Api::start(reader, None).await;
    let mut answers: Vec<(String, Value)> = Vec::new();
    macro_rules! ok {
        ($path:expr) => {{
            let path: String = $path;
            let (status, body) = api.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            answers.push((path, body.clone()));
            body
        }};
    }
    let all = || data.records.iter();
    let n = data.records.len() as u64;
    let total_bytes: u64 = all().map(|r| u64::from(r.wire_len)).sum();
    let t0 = data.t0();

    // tasks
    let tasks = ok!("/api/v1/tasks".into());
    assert_eq!(
        tasks["task_names"],
        json!([
            "per_dst_ip",
            "per_flow",
            "per_src_ip",
            "per_src_ip_hh",
            "per_src_ip_spread"
        ])
    );
    let algo: HashMap<&str, &Value> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), &t["algorithm"]))
        .collect();
    assert_eq!(algo["per_src_ip_hh"], "countmin");
    assert_eq!(algo["per_src_ip_spread"], "superspread");
    assert!(algo["per_src_ip"].is_null());

    // aggregate: one task, then every exact task
    let sources = Data::by_source(all());
    let flows = Data::by_flow(all());
    let agg = ok!("/api/v1/aggregate?task=per_src_ip".into());
    let first = all().map(|r| r.ts_ns).min().unwrap();
    let last = all().map(|r| r.ts_ns).max().unwrap();
    assert_eq!(
        agg,
        json!({"summaries": [{"task_name": "per_src_ip", "total_packets": n, "total_bytes": total_bytes,
        "flow_count": sources.len(), "first_seen": format_rfc3339_ns(first), "last_seen": format_rfc3339_ns(last)}]})
    );
    let agg_all = ok!("/api/v1/aggregate".into());
    let counts: Vec<(String, u64, u64)> = agg_all["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["task_name"].as_str().unwrap().to_string(),
                s["total_packets"].as_u64().unwrap(),
                s["flow_count"].as_u64().unwrap(),
            )
        })
        .collect();
    let dsts: std::collections::BTreeSet<_> = all().map(|r| r.dst_ip).collect();
    assert_eq!(
        counts,
        vec![
            ("per_dst_ip".to_string(), n, dsts.len() as u64),
            ("per_flow".to_string(), n, flows.len() as u64),
            ("per_src_ip".to_string(), n, sources.len() as u64),
        ]
    );
    // A filter only some tasks can honour: the others are left out.
    let agg443 = ok!("/api/v1/aggregate?dst_port=443&protocol=6".into());
    let want443: Vec<_> = all()
        .filter(|r| r.dst_port == 443 && r.protocol == 6)
        .collect();
    assert_eq!(agg443["summaries"].as_array().unwrap().len(), 1);
    assert_eq!(
        agg443["summaries"][0]["total_packets"],
        json!(want443.len())
    );

    // top: whole store by bytes
    let top = ok!("/api/v1/top?task=per_src_ip&by=bytes&limit=10".into());
    let want: Vec<Value> = ranked(&sources, true)
        .iter()
        .take(10)
        .map(|(k, s)| source_row(k, s))
        .collect();
    let got: Vec<Value> = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(strip)
        .collect();
    assert_eq!(got, want);
    assert_eq!(top["truncated"], json!(true));

    // top: CIDR filter and a time range, all rows
    let (from, to) = (t0 + WINDOW_NS, t0 + 3 * WINDOW_NS);
    let sub = Data::by_source(
        data.in_range(from, to)
            .filter(|r| in_10_slash_12(&r.src_ip)),
    );
    assert!(sub.len() > 50, "the range and filter select a real subset");
    let top = ok!(format!(
        "/api/v1/top?task=per_src_ip&src_ip=10.0.0.0/12&from={}&to={}&limit=0",
        format_rfc3339_ns(from),
        format_rfc3339_ns(to)
    ));
    let want: Vec<Value> = ranked(&sub, false)
        .iter()
        .map(|(k, s)| source_row(k, s))
        .collect();
    let got: Vec<Value> = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(strip)
        .collect();
    assert_eq!(got, want);
    assert_eq!(top["truncated"], json!(false));
    // `since` far enough back covers everything
    let since = ok!("/api/v1/aggregate?task=per_src_ip&since=87600h".into());
    assert_eq!(since["summaries"][0]["total_packets"], json!(n));

    // top on the 5-tuple with port and protocol filters
    let https = Data::by_flow(all().filter(|r| r.dst_port == 443 && r.protocol == 6));
    let top = ok!("/api/v1/top?task=per_flow&dst_port=443&protocol=6&limit=20".into());
    let want: Vec<Value> = ranked(&https, false).iter().take(20).map(|((s, d, sp, dp, p), v)| json!({
        "key": {"SrcIP": ip::to_string(s), "DstIP": ip::to_string(d), "SrcPort": sp, "DstPort": dp, "Protocol": p},
        "packets": v.packets, "bytes": v.bytes, "first_seen": format_rfc3339_ns(v.first), "last_seen": format_rfc3339_ns(v.last)})).collect();
    let got: Vec<Value> = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(strip)
        .collect();
    assert_eq!(got, want);

    // trace the busiest of those flows
    let ((s, d, sp, dp, p), v) = ranked(&https, false)[0];
    let trace = ok!(format!(
        "/api/v1/trace?task=per_flow&src_ip={}&dst_ip={}&src_port={sp}&dst_port={dp}&protocol={p}",
        ip::to_string(&s),
        ip::to_string(&d)
    ));
    assert_eq!(trace["lifecycle"]["total_packets"], json!(v.packets));
    assert_eq!(trace["lifecycle"]["total_bytes"], json!(v.bytes));
    assert_eq!(trace["lifecycle"]["first_seen"], ts(v.first));
    assert_eq!(trace["lifecycle"]["last_seen"], ts(v.last));
    let (status, body) = api
        .get("/api/v1/trace?task=per_flow&src_ip=192.0.2.1&dst_port=9")
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found")),
        "{body}"
    );

    // timeseries: every window, then one key
    let series = ok!("/api/v1/timeseries?task=per_src_ip&limit=0".into());
    let want: Vec<Value> = Data::series(all())
        .iter()
        .map(|(w, (s, keys))| {
            json!({
        "window_start": format_rfc3339_ns(*w), "window_end": format_rfc3339_ns(w + WINDOW_NS),
        "packets": s.packets, "bytes": s.bytes, "keys": keys.len()})
        })
        .collect();
    assert!(want.len() >= 3, "several windows");
    assert_eq!(series["rows"], json!(want));
    let hh = "10.255.0.1";
    let one = ok!(format!(
        "/api/v1/timeseries?task=per_src_ip&src_ip={hh}&limit=0"
    ));
    let want: Vec<Value> = Data::series(all().filter(|r| ip::to_string(&r.src_ip) == hh))
        .iter()
        .map(|(w, (s, _))| json!([format_rfc3339_ns(*w), s.packets, s.bytes]))
        .collect();
    let got: Vec<Value> = one["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["window_start"], r["packets"], r["bytes"]]))
        .collect();
    assert_eq!(got, want);

    // heavy hitters: the planted top sources, each estimate within its bound
    for (by, bytes) in [("packets", false), ("bytes", true)] {
        let hh = ok!(format!(
            "/api/v1/heavy-hitters?task=per_src_ip_hh&by={by}&limit=5"
        ));
        let rows = hh["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 5, "{hh}");
        assert_eq!(
            hh["partial"], false,
            "one writer: no period was split: {hh}"
        );
        for (i, (k, truth)) in ranked(&sources, bytes).iter().take(3).enumerate() {
            let row = &rows[i];
            assert_eq!(
                row["key"]["SrcIP"],
                json!(ip::to_string(k)),
                "{by} rank {i}: {hh}"
            );
            let est = row[by].as_u64().unwrap();
            let t = if bytes { truth.bytes } else { truth.packets };
            let bound = row["error_bound"].as_u64().unwrap();
            assert!(
                est >= t && est <= t + bound,
                "{by} estimate {est} for true {t} (bound {bound})"
            );
        }
    }
    // type=1 is the reference's "size"
    let by_size = ok!("/api/v1/heavy-hitters?task=per_src_ip_hh&type=1&limit=5".into());
    assert_eq!(
        by_size["rows"],
        answers.iter().rev().nth(1).unwrap().1["rows"]
    );

    // super-spreaders: the planted spreaders, within ±10 %
    let spread = data.spread();
    let ss = ok!("/api/v1/super-spreaders?task=per_src_ip_spread&limit=2".into());
    assert_eq!(ss["partial"], false, "{ss}");
    let mut planted: Vec<(&String, &usize)> = spread.iter().collect();
    planted.sort_by(|a, b| b.1.cmp(a.1));
    for (i, (k, d)) in planted.iter().take(2).enumerate() {
        let row = &ss["rows"][i];
        assert_eq!(row["key"]["SrcIP"], json!(k), "{ss}");
        let est = row["distinct"].as_u64().unwrap() as f64;
        assert!(
            (est - **d as f64).abs() <= 0.1 * **d as f64,
            "{k}: {est} vs {d}"
        );
    }

    // runs (not compared across backends: ids and clocks differ)
    let (status, runs) = api.get("/api/v1/runs").await;
    assert_eq!(status, 200);
    let rows = runs["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter()
            .map(|r| r["packets"].as_u64().unwrap())
            .sum::<u64>(),
        n
    );
    assert!(rows.iter().all(|r| r["status"] == "complete"));

    check_alerts(&mut api, data, &mut answers).await;
    check_grpc_matches_http(&mut api, &answers, (s, d, sp, dp, p)).await;
    check_hostile_input(&mut api).await;
    api.stop().await;
    answers
}

/// `alerts` over `Data::alerts` (stored by the caller): the contract JSON,
/// newest first, filters, a resolved instance's firing transition carrying
/// its end, `active`, and gRPC `ListAlerts` saying the same.
async fn check_alerts(api: &mut Api, data: &Data, answers: &mut Vec<(String, Value)>) {
    let stored = data.alerts();
    let (status, all) = api.get("/api/v1/alerts").await;
    assert_eq!(status, 200, "{all}");
    let list = all["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{all}");
    assert_eq!(all["truncated"], false);
    let first = &list[0];
    assert_eq!(first["rule"], "scanner", "newest window first: {all}");
    for field in [
        "rule",
        "task",
        "key",
        "metric",
        "value",
        "operator",
        "threshold",
        "severity",
        "state",
        "window_start",
        "starts_at",
        "ends_at",
        "analysis",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["key"], json!({"SrcIP": "10.0.0.2"}));
    assert_eq!(first["ends_at"], Value::Null);
    let fired = list
        .iter()
        .find(|a| a["rule"] == "big_talker" && a["state"] == "firing")
        .unwrap();
    assert_eq!(
        fired["ends_at"],
        json!(netspectra_model::alert::rfc3339(
            stored[1].ends_at_ns.unwrap()
        )),
        "a resolved instance's firing transition carries its end"
    );
    answers.push(("/api/v1/alerts".into(), all.clone()));
    for (query, want) in [
        ("state=resolved", 1),
        ("state=firing", 2),
        ("active=true", 1),
        ("rule=big_talker", 2),
        ("key=10.0.0.2", 1),
        ("limit=1", 1),
        (&*format!("from={}", stored[2].window_start_ns), 2),
        (&*format!("to={}", stored[1].window_start_ns), 1),
    ] {
        let path = format!("/api/v1/alerts?{query}");
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body["alerts"].as_array().unwrap().len(),
            want,
            "{path}: {body}"
        );
        answers.push((path, body));
    }
    for bad in ["state=pending", "active=maybe", "task=x", "from=2&to=1"] {
        let (status, body) = api.get(&format!("/api/v1/alerts?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let grpc = api
        .grpc
        .list_alerts(pb::ListAlertsRequest {
            active: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.alerts.len(), 1);
    assert_eq!(grpc.alerts[0].rule, "scanner");
    assert_eq!(
        grpc.alerts[0].key.get("SrcIP").map(String::as_str),
        Some("10.0.0.2")
    );
    assert!(grpc.alerts[0].ends_at.is_none());
}

fn answer<'a>(answers: &'a [(String, Value)], path: &str) -> &'a Value {
    &answers
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("no answer for {path}"))
        .1
}

async fn check_grpc_matches_http(
    api: &mut Api,
    answers: &[(String, Value)],
    flow: crate::fixture::Flow,
) {
    let g = &mut api.grpc;
    let tasks = g
        .search_tasks(pb::SearchTasksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json!(tasks.task_names),
        answer(answers, "/api/v1/tasks")["task_names"]
    );

    let top = g
        .top_keys(pb::TopKeysRequest {
            task_name: "per_src_ip".into(),
            by: "bytes".into(),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let http = answer(answers, "/api/v1/top?task=per_src_ip&by=bytes&limit=10");
    let grpc_rows: Vec<Value> = top.rows.iter().map(|r| json!({"key": map_json(&r.key), "packets": r.packets, "bytes": r.bytes,
        "first_seen": stamp_text(&r.first_seen), "last_seen": stamp_text(&r.last_seen), "windows": r.windows})).collect();
    assert_eq!(grpc_rows, rows_with_text_keys(http));
    assert_eq!(json!(top.truncated), http["truncated"]);

    let agg = g
        .aggregate_flows(pb::AggregationRequest {
            dst_port: Some(443),
            protocol: Some(6),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let http = answer(answers, "/api/v1/aggregate?dst_port=443&protocol=6");
    let grpc_sums: Vec<Value> = agg.summaries.iter().map(|s| json!({"task_name": s.task_name, "total_packets": s.total_packets,
        "total_bytes": s.total_bytes, "flow_count": s.flow_count, "first_seen": stamp_text(&s.first_seen), "last_seen": stamp_text(&s.last_seen)})).collect();
    assert_eq!(json!(grpc_sums), http["summaries"]);

    let (s, d, sp, dp, p) = flow;
    let keys: HashMap<String, String> = [
        ("SrcIP", ip::to_string(&s)),
        ("DstIP", ip::to_string(&d)),
        ("SrcPort", sp.to_string()),
        ("DstPort", dp.to_string()),
        ("Protocol", p.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let trace = g
        .trace_flow(pb::TraceFlowRequest {
            task_name: "per_flow".into(),
            flow_keys: keys,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .lifecycle
        .unwrap();
    let http = answers
        .iter()
        .find(|(p, _)| p.starts_with("/api/v1/trace"))
        .unwrap()
        .1["lifecycle"]
        .clone();
    assert_eq!(
        json!({"first_seen": stamp_text(&trace.first_seen), "last_seen": stamp_text(&trace.last_seen),
        "total_packets": trace.total_packets, "total_bytes": trace.total_bytes, "windows": trace.windows}),
        http
    );

    let series = g
        .time_series(pb::TimeSeriesRequest {
            task_name: "per_src_ip".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let grpc_rows: Vec<Value> = series.rows.iter().map(|r| json!({"window_start": stamp_text(&r.window_start),
        "window_end": stamp_text(&r.window_end), "packets": r.packets, "bytes": r.bytes, "keys": r.keys})).collect();
    assert_eq!(
        json!(grpc_rows),
        answer(answers, "/api/v1/timeseries?task=per_src_ip&limit=0")["rows"]
    );

    let hh = g
        .query_heavy_hitters(pb::HeavyHittersRequest {
            task_name: "per_src_ip_hh".into(),
            r#type: 1,
            limit: Some(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let http = answer(
        answers,
        "/api/v1/heavy-hitters?task=per_src_ip_hh&by=bytes&limit=5",
    );
    let grpc_rows: Vec<Value> = hh
        .hitters
        .iter()
        .map(|h| {
            json!({"key": map_json(&h.key), "bytes": h.value,
        "error_bound": h.error_bound, "periods": h.periods})
        })
        .collect();
    assert_eq!(grpc_rows, rows_with_text_keys(http));
    assert!(
        hh.hitters[0].flow.starts_with("SrcIP="),
        "{}",
        hh.hitters[0].flow
    );

    let ss = g
        .query_super_spreaders(pb::SuperSpreadersRequest {
            task_name: "per_src_ip_spread".into(),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let http = answer(
        answers,
        "/api/v1/super-spreaders?task=per_src_ip_spread&limit=2",
    );
    let grpc_rows: Vec<Value> = ss
        .rows
        .iter()
        .map(|r| {
            json!({"key": map_json(&r.key), "distinct": r.distinct,
        "error_bound": r.error_bound, "periods": r.periods})
        })
        .collect();
    assert_eq!(grpc_rows, rows_with_text_keys(http));

    // Go2NetSpectra's clients call `v1.QueryService`: the same answers.
    let addr = format!("http://{}", api.running.grpc_addr.unwrap());
    let mut reference =
        netspectra_api::go2netspectra::query_service_client::QueryServiceClient::connect(addr)
            .await
            .unwrap();
    let agg = pb::AggregationRequest {
        task_name: "per_src_ip".into(),
        ..Default::default()
    };
    let theirs = reference
        .aggregate_flows(agg.clone())
        .await
        .unwrap()
        .into_inner();
    let ours = g.aggregate_flows(agg).await.unwrap().into_inner();
    assert_eq!(theirs, ours);
    assert_eq!(theirs.summaries.len(), 1);
    let spread = reference
        .query_heavy_hitters(pb::HeavyHittersRequest {
            task_name: "per_src_ip_spread".into(),
            r#type: 2,
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<u64> = spread.hitters.iter().map(|h| h.value).collect();
    let distinct: Vec<u64> = ss.rows.iter().map(|r| r.distinct).collect();
    assert_eq!(values, distinct, "type 2 answers the super-spreaders");
    let status = reference
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, "ok");

    let runs = g
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.rows.len(), 2);
    let health = g
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, "ok");
}

/// Bad and hostile parameters: a 400 naming the problem (gRPC:
/// INVALID_ARGUMENT), and the store answers exactly as before.
async fn check_hostile_input(api: &mut Api) {
    let before = api.get("/api/v1/aggregate").await;
    let runs_before = api.get("/api/v1/runs").await;
    let long = "a".repeat(10_000);
    let cases: Vec<(String, u16, &str)> =
        vec![
        (
            "/api/v1/top?task=per_src_ip'%20OR%20'1'='1".into(),
            400,
            "unknown task",
        ),
        (
            "/api/v1/top?task=per_src_ip%3B%20DROP%20TABLE%20exact_rows%3B%20--".into(),
            400,
            "unknown task",
        ),
        (
            "/api/v1/top?task=per_src_ip&src_ip=10.0.0.1'%20OR%201=1%20--".into(),
            400,
            "src_ip",
        ),
        (
            "/api/v1/top?task=per_src_ip&src_port=443%20OR%201=1".into(),
            400,
            "src_port",
        ),
        (
            "/api/v1/top?task=per_src_ip&from=2026-01-01T00:00:00Z'%3B%20DROP%20TABLE%20runs%3B--"
                .into(),
            400,
            "from",
        ),
        ("/api/v1/top?task=per_src_ip&limit=-1".into(), 400, "limit"),
        (
            "/api/v1/top?task=per_src_ip&limit=99999999".into(),
            400,
            "maximum",
        ),
        ("/api/v1/top?task=per_src_ip&bogus=1".into(), 400, "bogus"),
        (
            "/api/v1/top?task=per_src_ip&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z".into(),
            400,
            "inverted",
        ),
        (
            "/api/v1/top?task=per_src_ip&dst_ip=10.0.0.1".into(),
            400,
            "cannot be filtered by DstIP",
        ),
        ("/api/v1/top?task=per_src_ip&by=rows".into(), 400, "by"),
        ("/api/v1/top".into(), 400, "needs a task"),
        (
            "/api/v1/heavy-hitters?task=per_src_ip".into(),
            400,
            "exact task",
        ),
        (
            "/api/v1/super-spreaders?task=per_src_ip_hh".into(),
            400,
            "countmin task",
        ),
        (
            "/api/v1/trace?task=per_flow".into(),
            400,
            "at least one key field",
        ),
        ("/api/v1/tasks?task=x".into(), 400, "does not take parameter `task`"),
        (
            "/api/v1/aggregate?limit=5".into(),
            400,
            "does not take parameter `limit`",
        ),
        (
            "/api/v1/timeseries?task=per_src_ip&by=bytes".into(),
            400,
            "does not take parameter `by`",
        ),
        (format!("/api/v1/top?task={long}"), 414, "longer than"),
        ("/api/v1/nothing".into(), 404, "no route"),
    ];
    for (path, status, words) in cases {
        let (got, body) = api.get(&path).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(
            message.contains(words),
            "{path}: `{message}` should mention `{words}`"
        );
        assert!(body["error"]["code"].is_string());
    }
    let resp = api
        .http
        .post(format!("{}/api/v1/aggregate", api.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    let g = &mut api.grpc;
    let err = g
        .top_keys(pb::TopKeysRequest {
            task_name: "x' OR '1'='1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = g
        .top_keys(pb::TopKeysRequest {
            task_name: "per_src_ip".into(),
            src_ip: "1.2.3.4'--".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("src_ip"), "{}", err.message());
    let err = g
        .trace_flow(pb::TraceFlowRequest {
            task_name: "per_flow".into(),
            flow_keys: [("Vlan; DROP".to_string(), "1".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = g
        .query_heavy_hitters(pb::HeavyHittersRequest {
            task_name: "per_src_ip_hh".into(),
            r#type: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Requests are a few fields: a 100 KB one is refused before decoding.
    let err = g
        .top_keys(pb::TopKeysRequest {
            task_name: "x".repeat(100_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert_eq!(
        api.get("/api/v1/aggregate").await,
        before,
        "hostile requests changed the data"
    );
    assert_eq!(api.get("/api/v1/runs").await, runs_before);
}

pub async fn check_auth(reader: Reader) {
    let mut api = Api::start(reader, Some("s3cret")).await;
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let (status, body) = api.get_as("/api/v1/tasks", token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(api.get_as("/api/v1/tasks", Some("s3cret")).await.0, 200);
    for open in [
        "/healthz",
        "/readyz",
        "/api/v1/health",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(api.get_as(open, None).await.0, 200, "{open}");
    }
    let err = api
        .grpc
        .search_tasks(pb::SearchTasksRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = api
        .grpc
        .top_keys(req(
            pb::TopKeysRequest {
                task_name: "per_src_ip".into(),
                ..Default::default()
            },
            Some("nope"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let ok = api
        .grpc
        .top_keys(req(
            pb::TopKeysRequest {
                task_name: "per_src_ip".into(),
                limit: Some(3),
                ..Default::default()
            },
            Some("s3cret"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.rows.len(), 3);
    // The standard health service stays open.
    let channel = Channel::from_shared(format!("http://{}", api.running.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Reflection describes the schema: it takes the token like the queries.
    let refused = reflected_services(channel.clone(), None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let names = reflected_services(channel, Some("s3cret")).await.unwrap();
    assert!(
        names.iter().any(|n| n == "netspectra.v1.QueryService"),
        "{names:?}"
    );
    // The service's own HealthCheck is a health endpoint: open.
    let health = api
        .grpc
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, "ok");
    // The scheme is case-insensitive (RFC 7235).
    let resp = api
        .http
        .get(format!("{}/api/v1/tasks", api.base))
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    api.stop().await;
}

pub async fn check_not_ready(reader: Reader) {
    let mut api = Api::start(reader, None).await;
    assert_eq!(api.get("/healthz").await.0, 200);
    let (status, body) = api.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, _) = api.get("/api/v1/tasks").await;
    assert_eq!(status, 503);
    let health = api
        .grpc
        .health_check(pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        health.status.starts_with("unavailable"),
        "{}",
        health.status
    );
    let channel = Channel::from_shared(format!("http://{}", api.running.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "netspectra.v1.QueryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    api.stop().await;
}
