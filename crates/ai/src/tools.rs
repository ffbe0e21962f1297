//! The analyst's tools (**contract**): one per query operation, named
//! after the HTTP operation (`heavy-hitters` → `heavy_hitters`), taking
//! the same parameters, answered with the same validation and the same
//! JSON as `GET /api/v1/<operation>` — so every number the model sees is
//! one a user can ask the API for.

use netspectra_api::analyst::ToolCall;
use netspectra_api::QueryService;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The tools' names, in the order offered.
pub const NAMES: [&str; 8] = [
    "tasks",
    "aggregate",
    "top",
    "trace",
    "heavy_hitters",
    "super_spreaders",
    "timeseries",
    "alerts",
];

/// Rows a tool answers when the model gives no `limit`: enough to reason
/// about, small enough for a model's context.
pub const DEFAULT_LIMIT: u64 = 20;

/// Longest tool answer handed to a model, in bytes of JSON.
pub const MAX_RESULT_BYTES: usize = 24 << 10;

/// Where tool calls are answered: the query operations over one store.
#[derive(Clone)]
pub struct Tools {
    service: Arc<QueryService>,
}

impl Tools {
    /// Tools answered by `service` (the store the API reads).
    pub fn local(service: Arc<QueryService>) -> Tools {
        Tools { service }
    }

    /// Runs one call; the answer is the operation's JSON, or the API's
    /// error body (`{"error":{"code","message"}}`) for the model to read
    /// and correct its call.
    pub async fn call(&self, call: &ToolCall) -> Value {
        let Some(op) = operation(&call.name) else {
            return error(
                "not_found",
                &format!("no tool `{}`; tools: {}", call.name, NAMES.join(", ")),
            );
        };
        let query = match query_string(op, &call.arguments) {
            Ok(q) => q,
            Err(message) => return error("bad_request", &message),
        };
        // Within the API's limits: a slot of the shared pool (or shed) and
        // the request timeout, as a GET of the operation would be.
        let answer = self
            .service
            .bounded(netspectra_api::http::operate(&self.service, op, &query));
        match answer.await {
            Ok(answer) => answer,
            Err(e) => error(e.code(), &e.to_string()),
        }
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// The HTTP operation of tool `name`.
fn operation(name: &str) -> Option<&'static str> {
    Some(match name {
        "tasks" => "tasks",
        "aggregate" => "aggregate",
        "top" => "top",
        "trace" => "trace",
        "heavy_hitters" => "heavy-hitters",
        "super_spreaders" => "super-spreaders",
        "timeseries" => "timeseries",
        "alerts" => "alerts",
        _ => return None,
    })
}

/// Arguments (a JSON object of strings, numbers and booleans) as the
/// operation's query string; a missing `limit` becomes [`DEFAULT_LIMIT`]
/// where the operation takes one.
fn query_string(op: &str, arguments: &Value) -> Result<String, String> {
    let empty = Map::new();
    let args = match arguments {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => return Err(format!("arguments must be a JSON object, not {other}")),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in args {
        let text = match value {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "argument `{name}` must be a string or a number, not {other}"
                ))
            }
        };
        pairs.push((name.clone(), text));
    }
    let takes_limit = !matches!(op, "tasks" | "aggregate" | "trace");
    if takes_limit && !args.contains_key("limit") {
        pairs.push(("limit".into(), DEFAULT_LIMIT.to_string()));
    }
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&"))
}

/// Percent-encodes a query-string component.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A tool answer as the text handed to a model: the JSON, cut to
/// [`MAX_RESULT_BYTES`] by dropping rows from the end (saying so).
pub fn for_model(mut answer: Value) -> String {
    let mut text = answer.to_string();
    while text.len() > MAX_RESULT_BYTES {
        let list = if answer.get("rows").is_some() {
            "rows"
        } else {
            "alerts"
        };
        let Some(rows) = answer
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .filter(|r| !r.is_empty())
        else {
            let mut cut = MAX_RESULT_BYTES / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            // Still JSON, so a prompt that embeds it stays valid.
            return json!({
                "cut": format!("the answer is longer than {MAX_RESULT_BYTES} bytes; its start follows"),
                "start": &text[..cut],
            })
            .to_string();
        };
        let keep = rows.len() / 2;
        rows.truncate(keep);
        answer["truncated"] = true.into();
        text = answer.to_string();
    }
    text
}

/// The tools as offered to an OpenAI-compatible model (`tools` of a chat
/// request).
pub fn specs() -> Value {
    let s = |t: &str, d: &str| json!({"type": t, "description": d});
    let scope = || {
        json!({
            "task": s("string", "Task name, from the `tasks` tool."),
            "from": s("string", "Start of the time range, RFC 3339 (e.g. 2026-01-01T00:00:00Z)."),
            "to": s("string", "End of the time range (exclusive), RFC 3339."),
            "since": s("string", "Time range counted back from now, e.g. 15m, 1h, 24h (not with `from`)."),
            "src_ip": s("string", "Source address or CIDR, e.g. 10.0.0.1 or 10.0.0.0/8."),
            "dst_ip": s("string", "Destination address or CIDR."),
            "src_port": s("integer", "Source port."),
            "dst_port": s("integer", "Destination port."),
            "protocol": s("integer", "IP protocol number (6 TCP, 17 UDP, 1 ICMP)."),
            "run": s("string", "Which analysis runs to read: a run id, `latest` or `all` (default)."),
        })
    };
    let with = |extra: Value| {
        let mut p = scope();
        for (k, v) in extra.as_object().into_iter().flatten() {
            p[k] = v.clone();
        }
        p
    };
    let limit = s("integer", "Rows to return (default 20).");
    let by = json!({"type": "string", "enum": ["packets", "bytes"], "description": "Rank by packets (default) or bytes."});
    let tools = [
        ("tasks", "List the configured tasks: name, kind (exact or sketch), algorithm, key dimensions and window length. Call it first to learn the task names.", json!({})),
        ("aggregate", "Totals (packets, bytes, distinct keys, first and last packet) of exact tasks over a time range and key filter.", scope()),
        ("top", "The keys of an exact task with the most packets or bytes, exactly counted.", with(json!({"limit": limit, "by": by}))),
        ("trace", "One flow's life (first and last packet, packets, bytes, windows) in an exact task, selected by the key filter.", scope()),
        ("heavy_hitters", "Heavy hitters estimated by a Count-Min or heavy-hitter sketch task, with error bounds.", with(json!({"limit": limit, "by": by}))),
        ("super_spreaders", "Keys (usually sources) reaching the most distinct elements (usually destinations) per window, estimated by a SuperSpread task, with error bounds.", with(json!({"limit": limit}))),
        ("timeseries", "Packets, bytes and distinct keys per window of an exact task, for the key filter, oldest window first: give `from`/`to` (or `since`) to see a given period.", with(json!({"limit": limit}))),
        ("alerts", "Stored alert transitions (firing and resolved), newest first.", json!({
            "from": s("string", "Start, RFC 3339."),
            "to": s("string", "End, RFC 3339."),
            "since": s("string", "Counted back from now, e.g. 1h."),
            "rule": s("string", "Only this rule."),
            "state": json!({"type": "string", "enum": ["firing", "resolved"]}),
            "key": s("string", "Text the alert's key contains, e.g. an address."),
            "active": s("boolean", "Only instances still firing."),
            "limit": limit,
        })),
    ];
    tools
        .into_iter()
        .map(|(name, description, properties)| {
            json!({"type": "function", "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "additionalProperties": false},
            }})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_named_after_the_http_operations() {
        let specs = specs();
        let names: Vec<&str> = specs
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, NAMES);
        for name in NAMES {
            let path = format!("/api/v1/{}", operation(name).unwrap());
            assert!(
                netspectra_api::http::ROUTES.contains(&path.as_str()),
                "{path}"
            );
        }
    }

    #[test]
    fn arguments_become_the_operations_query_string() {
        let q = query_string(
            "top",
            &json!({"task": "per src", "by": "bytes", "src_port": 53, "dst_ip": null}),
        )
        .unwrap();
        assert_eq!(q, "task=per%20src&by=bytes&src_port=53&limit=20");
        assert_eq!(
            query_string("trace", &json!({"task": "t"})).unwrap(),
            "task=t"
        );
        assert_eq!(
            query_string("alerts", &json!({"active": true, "limit": 3})).unwrap(),
            "active=true&limit=3"
        );
        assert!(query_string("top", &json!({"task": ["a"]})).is_err());
        assert!(query_string("top", &json!("task=x")).is_err());
    }

    #[test]
    fn long_answers_are_cut_by_rows_and_say_so() {
        let rows: Vec<Value> = (0..5000).map(|i| json!({"key": {"SrcIP": format!("10.0.{}.{}", i / 256, i % 256)}, "packets": i})).collect();
        let text = for_model(json!({"rows": rows, "truncated": false}));
        assert!(text.len() <= MAX_RESULT_BYTES, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["rows"][0]["packets"], 0);
    }
}
