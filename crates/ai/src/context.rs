//! What the analysts look at before they say anything: a fixed set of
//! tool calls over the store (its tasks, totals, top talkers, super-
//! spreaders, heavy hitters, alerts — or, for an alert, the key's windows
//! around it and its top peers). The offline analyst turns it into
//! prose; a model without tools gets it in its prompt; a model with tools
//! gets the alert context with the alert.

use crate::tools::Tools;
use netspectra_api::analyst::ToolCall;
use netspectra_model::alert::AlertRecord;
use serde_json::{json, Map, Value};

/// Tool calls made and what they answered, in order.
#[derive(Clone, Debug, Default)]
pub struct Gathered {
    /// Each call with its answer.
    pub results: Vec<(ToolCall, Value)>,
}

impl Gathered {
    async fn run(&mut self, tools: &Tools, name: &str, arguments: Value) -> Value {
        let call = ToolCall {
            name: name.to_string(),
            arguments,
        };
        let answer = tools.call(&call).await;
        self.results.push((call, answer.clone()));
        answer
    }

    /// The calls alone.
    pub fn calls(&self) -> Vec<ToolCall> {
        self.results.iter().map(|(c, _)| c.clone()).collect()
    }

    /// The whole as JSON for a prompt: `[{"tool", "arguments", "answer"}]`.
    pub fn to_json(&self) -> Value {
        self.results
            .iter()
            .map(|(c, a)| {
                json!({"tool": c.name, "arguments": c.arguments,
                       "answer": serde_json::from_str::<Value>(&crate::tools::for_model(a.clone())).unwrap_or(Value::Null)})
            })
            .collect()
    }
}

/// A task as `tasks` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// Name.
    pub name: String,
    /// `exact` or `sketch`.
    pub kind: String,
    /// Sketch algorithm (`countmin`, `hh`, `superspread`).
    pub algorithm: String,
    /// Key dimension names.
    pub key: Vec<String>,
    /// Window length, ns.
    pub window_ns: u64,
}

/// The tasks of a `tasks` answer.
pub fn tasks(answer: &Value) -> Vec<Task> {
    answer["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Task {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            kind: t["kind"].as_str().unwrap_or_default().to_string(),
            algorithm: t["algorithm"].as_str().unwrap_or_default().to_string(),
            key: t["key"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            window_ns: t["window_ns"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// The exact task to read talkers from: keyed by source address alone if
/// there is one, else the first exact task keyed by a source address,
/// else the first exact task.
pub fn talker_task(tasks: &[Task]) -> Option<&Task> {
    let exact = || tasks.iter().filter(|t| t.kind == "exact");
    exact()
        .find(|t| t.key == ["SrcIP"])
        .or_else(|| exact().find(|t| t.key.iter().any(|d| d == "SrcIP")))
        .or_else(|| exact().next())
}

/// An exact task whose key holds `have` and also `also`: where a key's
/// peers can be read (a source's destinations).
pub fn peer_task<'a>(tasks: &'a [Task], have: &str, also: &str) -> Option<&'a Task> {
    tasks.iter().find(|t| {
        t.kind == "exact" && t.key.iter().any(|d| d == have) && t.key.iter().any(|d| d == also)
    })
}

/// What the analysts read to answer a question about the traffic:
/// the tasks, totals, top talkers by bytes, super-spreaders, heavy
/// hitters and recent alerts; with `addresses`, each one's traffic as
/// source and destination and its top peers.
pub async fn overview(tools: &Tools, addresses: &[String]) -> Gathered {
    let mut g = Gathered::default();
    let all = tasks(&g.run(tools, "tasks", json!({})).await);
    if all.is_empty() {
        return g;
    }
    g.run(tools, "aggregate", json!({})).await;
    if let Some(t) = talker_task(&all) {
        g.run(
            tools,
            "top",
            json!({"task": t.name, "by": "bytes", "limit": 5}),
        )
        .await;
    }
    for address in addresses.iter().take(3) {
        if let Some(t) = all
            .iter()
            .find(|t| t.kind == "exact" && t.key.iter().any(|d| d == "SrcIP"))
        {
            g.run(
                tools,
                "aggregate",
                json!({"task": t.name, "src_ip": address}),
            )
            .await;
        }
        if let Some(t) = all
            .iter()
            .find(|t| t.kind == "exact" && t.key.iter().any(|d| d == "DstIP"))
        {
            g.run(
                tools,
                "aggregate",
                json!({"task": t.name, "dst_ip": address}),
            )
            .await;
        }
        if let Some(t) = peer_task(&all, "SrcIP", "DstIP") {
            g.run(
                tools,
                "top",
                json!({"task": t.name, "src_ip": address, "by": "bytes", "limit": 5}),
            )
            .await;
        }
    }
    for t in all.iter().filter(|t| t.algorithm == "superspread") {
        g.run(
            tools,
            "super_spreaders",
            json!({"task": t.name, "limit": 100}),
        )
        .await;
    }
    for t in all
        .iter()
        .filter(|t| matches!(t.algorithm.as_str(), "countmin" | "hh"))
    {
        g.run(
            tools,
            "heavy_hitters",
            json!({"task": t.name, "by": "bytes", "limit": 5}),
        )
        .await;
    }
    g.run(tools, "alerts", json!({"limit": 10})).await;
    g
}

/// An alert's key as query parameters (`{"SrcIP":"10.0.0.1"}` →
/// `src_ip=10.0.0.1`); dimensions the operations cannot filter on are
/// left out.
pub fn key_filter(alert: &AlertRecord) -> Map<String, Value> {
    let key: Value = serde_json::from_str(&alert.key).unwrap_or(Value::Null);
    let mut filter = Map::new();
    for (dimension, value) in key.as_object().into_iter().flatten() {
        let param = match dimension.as_str() {
            "SrcIP" => "src_ip",
            "DstIP" => "dst_ip",
            "SrcPort" => "src_port",
            "DstPort" => "dst_port",
            "Protocol" => "protocol",
            _ => continue,
        };
        filter.insert(param.into(), value.clone());
    }
    filter
}

/// Windows of context read before and after an alert.
const AROUND: u64 = 5;
/// Alerts of one notification given context (the rest are listed only).
pub const MAX_ALERTS_WITH_CONTEXT: usize = 5;

/// One alert's context: the answers of its `timeseries` and `top` calls.
#[derive(Clone, Debug, Default)]
pub struct AlertContext {
    /// The key's windows around the alert.
    pub series: Option<Value>,
    /// The key's top peers by bytes.
    pub peers: Option<Value>,
}

/// What an alert's analysis reads: per alert (the first few), the key's
/// windows from a few before the alert to a few after (an exact task
/// holding the key's dimensions), and its top peers; every call made, and
/// each alert's own answers.
pub async fn around_alerts(tools: &Tools, alerts: &[AlertRecord]) -> (Gathered, Vec<AlertContext>) {
    let mut g = Gathered::default();
    let mut contexts = Vec::new();
    let all = tasks(&g.run(tools, "tasks", json!({})).await);
    for alert in alerts.iter().take(MAX_ALERTS_WITH_CONTEXT) {
        let filter = key_filter(alert);
        let window = all
            .iter()
            .find(|t| t.name == alert.task)
            .map_or(60_000_000_000, |t| t.window_ns.max(1));
        // Saturating: the times of an alert sent over gRPC are anyone's.
        let from = alert
            .window_start_ns
            .saturating_sub(AROUND.saturating_mul(window));
        let to = alert
            .ends_at_ns
            .unwrap_or(alert.window_start_ns.saturating_add(window))
            .saturating_add(AROUND.saturating_mul(window));
        let range = |mut args: Map<String, Value>| {
            args.insert("from".into(), netspectra_model::alert::rfc3339(from).into());
            args.insert("to".into(), netspectra_model::alert::rfc3339(to).into());
            args
        };
        let dims: Vec<&str> = serde_json::from_str::<Value>(&alert.key)
            .ok()
            .and_then(|k| k.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
            .unwrap_or_default()
            .iter()
            .map(|d| match d.as_str() {
                "SrcIP" => "SrcIP",
                "DstIP" => "DstIP",
                _ => "",
            })
            .filter(|d| !d.is_empty())
            .collect();
        let series_task = all
            .iter()
            .filter(|t| t.kind == "exact")
            .find(|t| t.name == alert.task)
            .or_else(|| {
                all.iter()
                    .filter(|t| t.kind == "exact")
                    .find(|t| dims.iter().all(|d| t.key.iter().any(|k| k == d)))
            });
        let mut context = AlertContext::default();
        if let Some(t) = series_task {
            let mut args = range(filter.clone());
            args.insert("task".into(), t.name.clone().into());
            args.insert("limit".into(), (4 * AROUND + 4).into());
            context.series = Some(g.run(tools, "timeseries", Value::Object(args)).await);
        }
        let peers = match dims.as_slice() {
            ["SrcIP"] => peer_task(&all, "SrcIP", "DstIP"),
            ["DstIP"] => peer_task(&all, "DstIP", "SrcIP"),
            _ => None,
        }
        .or_else(|| series_task.filter(|_| dims.is_empty()));
        if let Some(t) = peers {
            let mut args = range(filter);
            args.insert("task".into(), t.name.clone().into());
            args.insert("by".into(), "bytes".into());
            args.insert("limit".into(), 5.into());
            context.peers = Some(g.run(tools, "top", Value::Object(args)).await);
        }
        contexts.push(context);
    }
    (g, contexts)
}
