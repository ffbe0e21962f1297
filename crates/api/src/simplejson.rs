//! The Grafana SimpleJSON face that Go2NetSpectra's users' dashboards
//! call: `GET /grafana/` (test connection), `POST /grafana/search` (the
//! exact tasks' names), `POST /grafana/query` and the legacy `POST /query`
//! and `POST /search`.
//!
//! Unlike the reference, which answered one point (the total packets at
//! `range.to`), `query` answers a real time series: one point per stored
//! window of the task within `range`, `[value, window start in ms]`. A
//! target is a task name, optionally with the measure after a colon
//! (`per_src_ip`, `per_src_ip:bytes`, `per_src_ip:keys`; packets by
//! default). When a series has more windows than `maxDataPoints`,
//! neighbouring windows are summed (distinct keys: the largest is kept).
//! These routes sit behind the same token check as `/api/v1`.

use crate::ask::{parse_time, AskInput};
use crate::error::{bad, ApiError};
use crate::service::QueryService;
use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Targets one query may ask for at most.
const MAX_TARGETS: usize = 32;

/// The SimpleJSON routes, for the router's token-guarded part.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<QueryService>: FromRef<S>,
{
    Router::new()
        .route("/grafana/", get(test_connection))
        .route("/grafana", get(test_connection))
        .route("/grafana/search", post(search))
        .route("/grafana/query", post(query))
        .route("/search", post(search))
        .route("/query", post(query))
}

async fn test_connection() -> Response {
    // Grafana's "Save & test" wants a 200; the reference sent no body.
    ().into_response()
}

/// `search` body: `{"target": "per_"}` filters names containing it.
#[derive(Debug, Default, Deserialize)]
struct SearchBody {
    #[serde(default)]
    target: Option<String>,
}

async fn search(
    State(s): State<Arc<QueryService>>,
    body: Bytes,
) -> Result<Json<Vec<String>>, ApiError> {
    let want: SearchBody = if body.iter().all(u8::is_ascii_whitespace) {
        SearchBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("search body: {e}")))?
    };
    let needle = want.target.unwrap_or_default();
    let names = s
        .tasks()
        .await?
        .tasks
        .into_iter()
        .filter(|t| t.kind == "exact" && t.name.contains(&needle))
        .map(|t| t.name)
        .collect();
    Ok(Json(names))
}

#[derive(Debug, Deserialize)]
struct QueryBody {
    #[serde(default)]
    range: Option<Range>,
    targets: Vec<Target>,
    #[serde(default, rename = "maxDataPoints")]
    max_data_points: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Range {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Target {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    hide: bool,
}

/// What a target's points count.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Measure {
    Packets,
    Bytes,
    Keys,
}

/// Splits `task[:measure]`.
fn parse_target(text: &str) -> Result<(&str, Measure), ApiError> {
    let (task, measure) = match text.rsplit_once(':') {
        Some((t, m)) => (t, m),
        None => (text, "packets"),
    };
    let measure = match measure {
        "packets" => Measure::Packets,
        "bytes" => Measure::Bytes,
        "keys" => Measure::Keys,
        other => {
            return Err(bad(format!(
                "target `{text}`: `{other}` is not a measure; use packets, bytes or keys"
            )))
        }
    };
    if task.is_empty() {
        return Err(bad("a target needs a task name"));
    }
    Ok((task, measure))
}

async fn query(State(s): State<Arc<QueryService>>, body: Bytes) -> Result<Response, ApiError> {
    let q: QueryBody =
        serde_json::from_slice(&body).map_err(|e| bad(format!("query body: {e}")))?;
    if q.targets.len() > MAX_TARGETS {
        return Err(bad(format!(
            "{} targets; at most {MAX_TARGETS} per query",
            q.targets.len()
        )));
    }
    let range = q.range.unwrap_or(Range {
        from: None,
        to: None,
    });
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| parse_time(name, t))
            .transpose()
    };
    let from_ns = time("range.from", &range.from)?;
    let to_ns = time("range.to", &range.to)?;
    let max_points = q.max_data_points.filter(|&n| n > 0).map(|n| n as usize);
    let mut out = Vec::with_capacity(q.targets.len());
    for t in q.targets.iter().filter(|t| !t.hide) {
        let Some(text) = t.target.as_deref().filter(|t| !t.is_empty()) else {
            continue; // Grafana sends empty targets while a panel is edited.
        };
        let (task, measure) = parse_target(text)?;
        let ask = AskInput {
            task: task.to_string(),
            from_ns,
            to_ns,
            limit: Some(0),
            ..AskInput::default()
        }
        .validate(s.limits())?;
        let rows = s.timeseries(&ask).await?.rows;
        let points: Vec<(u64, u64)> = rows
            .iter()
            .map(|r| {
                let v = match measure {
                    Measure::Packets => r.packets,
                    Measure::Bytes => r.bytes,
                    Measure::Keys => r.keys,
                };
                (v, r.window_start.0 / 1_000_000)
            })
            .collect();
        let points = thin(points, max_points, measure == Measure::Keys);
        let datapoints: Vec<Value> = points.iter().map(|(v, ms)| json!([v, ms])).collect();
        out.push(json!({"target": text, "datapoints": datapoints}));
    }
    Ok(Json(out).into_response())
}

/// At most `max` points: runs of neighbouring points merged (summed, or
/// the largest kept when `keep_max`), each at its first point's time.
fn thin(points: Vec<(u64, u64)>, max: Option<usize>, keep_max: bool) -> Vec<(u64, u64)> {
    let Some(max) = max.filter(|&m| points.len() > m) else {
        return points;
    };
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|c| {
            let v = if keep_max {
                c.iter().map(|p| p.0).max().unwrap_or(0)
            } else {
                c.iter().map(|p| p.0).sum()
            };
            (v, c[0].1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_task_and_a_measure() {
        assert_eq!(
            parse_target("per_src_ip").unwrap(),
            ("per_src_ip", Measure::Packets)
        );
        assert_eq!(parse_target("a:bytes").unwrap(), ("a", Measure::Bytes));
        assert_eq!(parse_target("a:keys").unwrap(), ("a", Measure::Keys));
        assert!(parse_target("a:nope").is_err());
        assert!(parse_target(":bytes").is_err());
    }

    #[test]
    fn thinning_keeps_the_sum_and_the_first_times() {
        let pts: Vec<(u64, u64)> = (0..10).map(|i| (i, 1000 + i * 100)).collect();
        assert_eq!(thin(pts.clone(), None, false), pts);
        assert_eq!(thin(pts.clone(), Some(10), false), pts);
        let t = thin(pts.clone(), Some(3), false);
        assert_eq!(t, vec![(6, 1000), (22, 1400), (17, 1800)]);
        assert_eq!(t.iter().map(|p| p.0).sum::<u64>(), 45);
        assert_eq!(thin(pts, Some(5), true)[4], (9, 1800));
    }
}
