//! The offline analyst: what NetSpectra says with no model configured.
//! It reads the same tool results a model would ([`crate::context`]) and
//! writes fixed, deterministic findings — the top talker and its share,
//! sources whose spread is far above the usual (a scan's signature),
//! heavy hitters, alerts firing — with numbers straight from the store.
//! It beats an error message, and it is the tests' oracle.

use crate::context::{self, Gathered};
use crate::tools::Tools;
use netspectra_api::analyst::{AskEvent, BoxFuture};
use netspectra_model::alert::{key_text, rfc3339, AlertRecord};
use netspectra_model::thousands;
use serde_json::Value;
use std::fmt::Write;
use tokio::sync::mpsc::Sender;

/// How many times the median spread a source must reach to be called a
/// likely scan (and at least [`SCAN_MIN_DISTINCT`] peers).
pub const SCAN_RATIO: f64 = 10.0;
/// Fewest distinct peers in one window for a likely scan.
pub const SCAN_MIN_DISTINCT: u64 = 100;

/// The deterministic analyst over a store's tools.
#[derive(Clone)]
pub struct OfflineAnalyst {
    tools: Tools,
}

impl OfflineAnalyst {
    /// An analyst reading through `tools`.
    pub fn new(tools: Tools) -> OfflineAnalyst {
        OfflineAnalyst { tools }
    }

    /// Answers `question`: tool calls as they are made, the findings one
    /// paragraph per delta, then done.
    pub async fn answer(
        &self,
        question: &str,
        events: &Sender<AskEvent>,
    ) -> Result<(), crate::AiError> {
        let addresses = addresses_in(question);
        let gathered = context::overview(&self.tools, &addresses).await;
        for (call, _) in &gathered.results {
            crate::openai::send(events, AskEvent::ToolCall(call.clone())).await?;
        }
        let paragraphs = findings(&gathered, &addresses, focus(question));
        let mut answer = String::new();
        for p in paragraphs {
            let piece = if answer.is_empty() {
                p
            } else {
                format!("\n\n{p}")
            };
            answer.push_str(&piece);
            crate::openai::send(events, AskEvent::Delta(piece)).await?;
        }
        crate::openai::send(
            events,
            AskEvent::Done {
                answer,
                tool_calls: gathered.calls(),
            },
        )
        .await
    }

    /// An analysis of one notification's alerts.
    pub fn analyse(&self, alerts: Vec<AlertRecord>) -> BoxFuture<Result<String, String>> {
        let tools = self.tools.clone();
        Box::pin(async move {
            let (_, contexts) = context::around_alerts(&tools, &alerts).await;
            Ok(alert_findings(&alerts, &contexts))
        })
    }
}

/// What the question is mostly about, to order the findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Focus {
    Traffic,
    Spread,
    Alerts,
}

fn focus(question: &str) -> Focus {
    let q = question.to_lowercase();
    if ["scan", "spread", "distinct", "sweep", "fan-out", "fanout"]
        .iter()
        .any(|w| q.contains(w))
    {
        Focus::Spread
    } else if ["alert", "firing", "incident"]
        .iter()
        .any(|w| q.contains(w))
    {
        Focus::Alerts
    } else {
        Focus::Traffic
    }
}

/// IP addresses written in the question.
pub fn addresses_in(question: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in question.split(|c: char| {
        c.is_whitespace() || matches!(c, ',' | ';' | '?' | '(' | ')' | '`' | '"' | '\'')
    }) {
        let word = word.trim_end_matches(['.', ':']);
        let word = word.split('/').next().unwrap_or_default();
        if word.parse::<std::net::IpAddr>().is_ok() && !out.iter().any(|a| a == word) {
            out.push(word.to_string());
        }
    }
    out
}

fn answers<'a>(
    g: &'a Gathered,
    tool: &'a str,
) -> impl Iterator<Item = (&'a Value, &'a Value)> + 'a {
    g.results
        .iter()
        .filter(move |(c, a)| c.name == tool && a.get("error").is_none())
        .map(|(c, a)| (&c.arguments, a))
}

/// The findings, one Markdown paragraph each.
fn findings(g: &Gathered, addresses: &[String], focus: Focus) -> Vec<String> {
    let Some((_, tasks)) = answers(g, "tasks").next() else {
        return vec!["The store could not be read, so there is nothing to analyse yet.".into()];
    };
    let tasks = context::tasks(tasks);
    if tasks.is_empty() {
        return vec!["The store holds no results yet: analyse a capture first (`netspectra analyze FILE`) or start engines writing to it.".into()];
    }
    let traffic = traffic(g, &tasks);
    let spread = spreaders(g, &tasks);
    let hitters = heavy_hitters(g);
    let alerts = alerts(g);
    let about = addresses.iter().map(|a| address(g, a)).collect::<Vec<_>>();
    let mut out = about;
    let order: [&Vec<String>; 4] = match focus {
        Focus::Traffic => [&traffic, &spread, &hitters, &alerts],
        Focus::Spread => [&spread, &traffic, &hitters, &alerts],
        Focus::Alerts => [&alerts, &spread, &traffic, &hitters],
    };
    for section in order {
        out.extend(section.iter().cloned());
    }
    out.push("_Answered by NetSpectra's built-in analyst from the stored results (no AI model is configured: set `ai.model` and `ai.base_url` for one)._".into());
    out
}

fn traffic(g: &Gathered, tasks: &[context::Task]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(talkers) = context::talker_task(tasks) else {
        return out;
    };
    let total = answers(g, "aggregate")
        .filter(|(args, _)| args.as_object().is_some_and(|o| o.is_empty()))
        .flat_map(|(_, a)| a["summaries"].as_array().cloned().unwrap_or_default())
        .find(|s| s["task_name"] == talkers.name.as_str());
    let Some(total) = total else {
        return out;
    };
    let bytes = total["total_bytes"].as_u64().unwrap_or(0);
    let packets = total["total_packets"].as_u64().unwrap_or(0);
    out.push(format!(
        "**Traffic** (task `{}`): {} packets, {} from {} keys, {} to {}.",
        talkers.name,
        thousands(packets),
        human_bytes(bytes),
        thousands(total["flow_count"].as_u64().unwrap_or(0)),
        total["first_seen"].as_str().unwrap_or("?"),
        total["last_seen"].as_str().unwrap_or("?"),
    ));
    let top = answers(g, "top")
        .find(|(args, _)| args["task"] == talkers.name.as_str() && args.get("src_ip").is_none());
    if let Some((_, top)) = top {
        let rows = top["rows"].as_array().cloned().unwrap_or_default();
        if let Some(first) = rows.first() {
            let b = first["bytes"].as_u64().unwrap_or(0);
            let mut p = format!(
                "Top talker by bytes: **{}**, {} in {} packets ({} of traffic).",
                row_key(first),
                human_bytes(b),
                thousands(first["packets"].as_u64().unwrap_or(0)),
                percent(b, bytes),
            );
            let next: Vec<String> = rows
                .iter()
                .skip(1)
                .map(|r| {
                    format!(
                        "{} ({})",
                        row_key(r),
                        percent(r["bytes"].as_u64().unwrap_or(0), bytes)
                    )
                })
                .collect();
            if !next.is_empty() {
                let _ = write!(p, " Next: {}.", next.join(", "));
            }
            out.push(p);
        }
    }
    out
}

fn spreaders(g: &Gathered, tasks: &[context::Task]) -> Vec<String> {
    let mut out = Vec::new();
    for (args, answer) in answers(g, "super_spreaders") {
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        let Some(first) = rows.first() else { continue };
        let task = args["task"].as_str().unwrap_or_default();
        let window = tasks
            .iter()
            .find(|t| t.name == task)
            .map_or(String::from("one window"), |t| {
                format!("one {} window", seconds(t.window_ns))
            });
        let top = first["distinct"].as_u64().unwrap_or(0);
        let bound = first["error_bound"].as_u64().unwrap_or(0);
        let mut p = format!(
            "**{}** reached {} distinct peers in {window} (± {}, task `{task}`)",
            row_key(first),
            thousands(top),
            thousands(bound),
        );
        // What a usual source reaches: the median of the reported ones
        // when the sketch reported enough, else the other sources'
        // average number of flows (exact: flows per source).
        let spreads: Vec<u64> = rows.iter().filter_map(|r| r["distinct"].as_u64()).collect();
        let baseline = if spreads.len() >= 5 {
            Some((
                median(spreads.clone()),
                format!("the median of the {} sources reported", spreads.len()),
            ))
        } else {
            other_sources_flows(g, tasks, top).map(|avg| {
                (
                    avg,
                    format!(
                        "the other sources' average of {} flows each",
                        thousands(avg)
                    ),
                )
            })
        };
        let ratio = baseline
            .as_ref()
            .map(|(b, _)| top as f64 / (*b).max(1) as f64);
        if let Some((_, what)) = &baseline {
            let _ = write!(p, ", {:.0}× {what}", ratio.unwrap_or(0.0));
        }
        let scan = top >= SCAN_MIN_DISTINCT && ratio.is_none_or(|r| r >= SCAN_RATIO);
        if scan {
            let _ = write!(
                p,
                " — typical of a scan. Check which destinations and ports it tried (`top` on a task keyed by source and destination, with `src_ip={}`) and whether any answered.",
                first_ip(first).unwrap_or_else(|| row_key(first))
            );
        } else {
            p.push_str(": no source stands out as a scanner.");
        }
        out.push(p);
    }
    out
}

/// The average number of flows of a source other than the top spreader
/// (`top` flows assumed its own), from the totals of a per-source and a
/// per-flow exact task; None without both.
fn other_sources_flows(g: &Gathered, tasks: &[context::Task], top: u64) -> Option<u64> {
    let per_source = tasks
        .iter()
        .find(|t| t.kind == "exact" && t.key == ["SrcIP"])?;
    let per_flow = context::peer_task(tasks, "SrcIP", "DstIP")?;
    let count = |name: &str| {
        answers(g, "aggregate")
            .filter(|(args, _)| args.as_object().is_some_and(|o| o.is_empty()))
            .flat_map(|(_, a)| a["summaries"].as_array().cloned().unwrap_or_default())
            .find(|s| s["task_name"] == name)
            .and_then(|s| s["flow_count"].as_u64())
    };
    let sources = count(&per_source.name)?;
    let flows = count(&per_flow.name)?;
    (sources > 1).then(|| flows.saturating_sub(top) / (sources - 1))
}

fn heavy_hitters(g: &Gathered) -> Vec<String> {
    answers(g, "heavy_hitters")
        .filter_map(|(args, answer)| {
            let rows = answer["rows"].as_array()?;
            if rows.is_empty() {
                return None;
            }
            let list: Vec<String> = rows
                .iter()
                .map(|r| {
                    let estimate = r["bytes"].as_u64().or(r["packets"].as_u64()).unwrap_or(0);
                    format!(
                        "{} ≈ {} (± {})",
                        row_key(r),
                        human_bytes(estimate),
                        human_bytes(r["error_bound"].as_u64().unwrap_or(0))
                    )
                })
                .collect();
            Some(format!(
                "Heavy hitters by bytes (sketch task `{}`): {}.",
                args["task"].as_str().unwrap_or_default(),
                list.join(", ")
            ))
        })
        .collect()
}

fn alerts(g: &Gathered) -> Vec<String> {
    let Some((_, answer)) = answers(g, "alerts").next() else {
        return Vec::new();
    };
    let alerts: Vec<AlertRecord> = answer["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(AlertRecord::from_json)
        .collect();
    if alerts.is_empty() {
        return vec!["No alerts are recorded.".into()];
    }
    let firing: Vec<&AlertRecord> = alerts
        .iter()
        .filter(|a| a.state == "firing" && a.ends_at_ns.is_none())
        .collect();
    let mut p = format!("**Alerts**: {} recent transitions", alerts.len());
    if firing.is_empty() {
        p.push_str(", none still firing.");
    } else {
        let _ = write!(
            p,
            "; still firing: {}.",
            firing
                .iter()
                .map(|a| a.summary())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    vec![p]
}

fn address(g: &Gathered, address: &str) -> String {
    let sum = |param: &str| {
        answers(g, "aggregate")
            .find(|(args, _)| args[param] == address)
            .and_then(|(_, a)| a["summaries"].get(0).cloned())
    };
    let mut p = format!("**{address}**:");
    let mut any = false;
    for (param, role) in [("src_ip", "as source"), ("dst_ip", "as destination")] {
        if let Some(s) = sum(param) {
            let packets = s["total_packets"].as_u64().unwrap_or(0);
            if packets > 0 {
                any = true;
            }
            let _ = write!(
                p,
                " {role} {} packets, {} (task `{}`);",
                thousands(packets),
                human_bytes(s["total_bytes"].as_u64().unwrap_or(0)),
                s["task_name"].as_str().unwrap_or_default()
            );
        }
    }
    if let Some((_, top)) = answers(g, "top").find(|(args, _)| args["src_ip"] == address) {
        if let Some(peers) = peer_list(top) {
            let _ = write!(p, " top peers by bytes: {peers}.");
        }
    }
    if !any {
        p = format!("**{address}** does not appear in the stored traffic.");
    }
    p.trim_end_matches(';').to_string()
}

/// The analysis of a notification's alerts, from each one's context
/// (the first few have one).
fn alert_findings(alerts: &[AlertRecord], contexts: &[context::AlertContext]) -> String {
    let mut out = String::new();
    for (i, a) in alerts.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        let _ = write!(out, "**{}**: {}.", a.rule, a.summary());
        let Some(c) = contexts.get(i) else {
            continue;
        };
        let ok = |v: &Option<Value>| v.clone().filter(|v| v.get("error").is_none());
        if let Some(s) = ok(&c.series) {
            let rows = s["rows"].as_array().cloned().unwrap_or_default();
            if let Some(peak) = rows.iter().max_by_key(|r| r["bytes"].as_u64().unwrap_or(0)) {
                let typical = median(rows.iter().filter_map(|r| r["bytes"].as_u64()).collect());
                let _ = write!(
                    out,
                    " Around it, {} windows of traffic; the busiest started {} with {} in {} packets (median window {}).",
                    rows.len(),
                    peak["window_start"].as_str().unwrap_or("?"),
                    human_bytes(peak["bytes"].as_u64().unwrap_or(0)),
                    thousands(peak["packets"].as_u64().unwrap_or(0)),
                    human_bytes(typical),
                );
            } else {
                out.push_str(" No stored traffic of this key around it.");
            }
        }
        if let Some(peers) = ok(&c.peers).as_ref().and_then(peer_list) {
            let _ = write!(out, " Top peers by bytes: {peers}.");
        }
        let advice = match a.metric.as_str() {
            "distinct" => " Many distinct peers from one key is typical of a scan: check which ports it tried and whether any peer answered.",
            "bytes" | "packets" => " Check whether the volume is expected (backups, updates) or an exfiltration or flood: look at the peers and ports above.",
            _ => "",
        };
        out.push_str(advice);
        if a.state == "resolved" {
            let _ = write!(
                out,
                " Resolved at {}.",
                a.ends_at_ns.map(rfc3339).unwrap_or_default()
            );
        }
    }
    out
}

/// A `top` answer's rows as `key (bytes), …` (None when empty).
fn peer_list(top: &Value) -> Option<String> {
    let peers: Vec<String> = top["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} ({})",
                row_key(r),
                human_bytes(r["bytes"].as_u64().unwrap_or(0))
            )
        })
        .collect();
    (!peers.is_empty()).then(|| peers.join(", "))
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// A row's key as text: one value alone, several as `Dim=value` pairs.
fn row_key(row: &Value) -> String {
    let key = &row["key"];
    match key.as_object() {
        Some(o) if o.len() == 1 => o.values().next().map(scalar).unwrap_or_default(),
        Some(_) => key_text(&key.to_string()),
        None => scalar(key),
    }
}

fn first_ip(row: &Value) -> Option<String> {
    row["key"]["SrcIP"]
        .as_str()
        .or(row["key"]["DstIP"].as_str())
        .map(str::to_string)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Bytes with a decimal unit: `812.3 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `part` of `whole` as a whole percentage (`31 %`).
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".into();
    }
    format!("{:.0} %", part as f64 * 100.0 / whole as f64)
}

fn seconds(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(812_345_678), "812.3 MB");
        assert_eq!(percent(31, 100), "31 %");
        assert_eq!(seconds(60_000_000_000), "60 s");
    }

    #[test]
    fn addresses_are_found_in_questions() {
        assert_eq!(
            addresses_in("what did 192.0.2.66 do? and 2001:db8::1, 10.0.0.0/8."),
            ["192.0.2.66", "2001:db8::1", "10.0.0.0"]
        );
        assert!(addresses_in("who scans?").is_empty());
        assert_eq!(focus("Who is scanning?"), Focus::Spread);
        assert_eq!(focus("any alerts?"), Focus::Alerts);
        assert_eq!(focus("top talkers"), Focus::Traffic);
    }
}
