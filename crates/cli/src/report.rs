//! What `analyze` prints: the JSON object (**contract**) and the table.

use netspectra_engine::{Estimate, SketchReport, TaskKind, TaskTotals};
use netspectra_model::time::format_rfc3339_ns;
use netspectra_model::FlowKey;
pub(crate) use netspectra_node::report::thousands as num;
use netspectra_node::report::Report;
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// `--format` of every command that prints a result: aligned columns, or
/// JSON (each command's JSON is its contract).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

fn key_json(task: &TaskTotals, key: &FlowKey) -> Value {
    Value::Object(key.render(&task.key).into_iter().collect::<Map<_, _>>())
}

fn dims(d: &[netspectra_model::Dimension]) -> Vec<String> {
    d.iter().map(|d| d.to_string()).collect()
}

/// The first `top` estimates (all when `top` is 0), as `--top` asks.
fn shown_estimates(top: usize, list: &[Estimate]) -> &[Estimate] {
    if top == 0 {
        list
    } else {
        &list[..list.len().min(top)]
    }
}

fn estimates_json(t: &TaskTotals, list: &[Estimate], top: usize) -> Value {
    Value::from(
        shown_estimates(top, list)
            .iter()
            .map(|e| json!({"key": key_json(t, &e.key), "estimate": e.estimate, "error_bound": e.error_bound}))
            .collect::<Vec<_>>(),
    )
}

fn sketch_json(t: &TaskTotals, algorithm: &str, s: &SketchReport, top: usize) -> Value {
    let mut v = json!({
        "name": t.name,
        "kind": "sketch",
        "algorithm": algorithm,
        "key": dims(&t.key),
        "memory_bytes": s.memory_bytes,
        "packets": t.packets,
        "bytes": t.bytes,
        "periods": s.periods,
    });
    let obj = v.as_object_mut().expect("object");
    if algorithm == "superspread" {
        obj.insert("element_key".into(), json!(dims(&t.element)));
        obj.insert(
            "super_spreaders".into(),
            estimates_json(t, &s.spreaders, top),
        );
    } else {
        obj.insert(
            "heavy_hitters".into(),
            json!({"packets": estimates_json(t, &s.heavy_packets, top), "bytes": estimates_json(t, &s.heavy_bytes, top)}),
        );
    }
    if let Some(verify) = &s.verify {
        let mut sets = Map::new();
        for a in &verify.sets {
            sets.insert(
                a.measure.to_string(),
                json!({
                    "reported": a.reported,
                    "expected": a.expected,
                    "precision": a.precision,
                    "recall": a.recall,
                    "f1": a.f1,
                    "avg_relative_error": a.avg_relative_error,
                    "worst_misses": a.worst_misses.iter()
                        .map(|(k, v)| json!({"key": key_json(t, k), "true": v}))
                        .collect::<Vec<_>>(),
                }),
            );
        }
        obj.insert("verify".into(), Value::Object(sets));
    }
    v
}

/// The `--format json` object.
pub fn json(r: &Report) -> Value {
    let tasks: Vec<Value> = r
        .engine
        .tasks
        .iter()
        .map(|t| {
            let rows: Vec<Value> = r
                .shown(t)
                .iter()
                .map(|(k, c)| {
                    json!({
                        "key": key_json(t, k),
                        "packets": c.packets,
                        "bytes": c.bytes,
                        "first_seen": format_rfc3339_ns(c.first_seen),
                        "last_seen": format_rfc3339_ns(c.last_seen),
                    })
                })
                .collect();
            match (&t.sketch, t.kind) {
                (Some(sketch), TaskKind::Sketch(algorithm)) => {
                    sketch_json(t, algorithm.name(), sketch, r.top)
                }
                _ => json!({
                    "name": t.name,
                    "kind": t.kind.name(),
                    "key": dims(&t.key),
                    "keys": t.keys,
                    "packets": t.packets,
                    "bytes": t.bytes,
                    "rows": rows,
                }),
            }
        })
        .collect();
    let mut out = json!({
        "files": serde_json::to_value(&r.files).unwrap_or_default(),
        "packets": r.packets,
        "bytes": r.bytes,
        "decoded": r.decoded,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "workers": r.workers,
        "window_s": r.window_ns as f64 / 1e9,
        "windows": r.engine.windows,
        "late_packets": r.engine.late_packets,
        "store": r.store.as_ref().map(|(url, run)| json!({"url": url, "run_id": run, "replaced": r.replaced})),
        "tasks": tasks,
    });
    if let Some(a) = &r.alerts {
        out["alerts"] = netspectra_model::alert::alerts_json(&a.alerts)["alerts"].take();
        out["notifications"] = json!({"sent": a.sent, "failed": a.failed, "dropped": a.dropped});
    }
    out
}

/// The alert lines of a report: counts, then one line per transition.
pub fn alerts_text(a: &netspectra_node::alerter::AlertOutcome) -> String {
    let (firing, resolved) = a.counts();
    let mut out = format!(
        "
alerts: {firing} fired, {resolved} resolved; notifications: {} sent, {} failed",
        a.sent, a.failed
    );
    if a.dropped > 0 {
        let _ = write!(out, ", {} dropped (queue full)", a.dropped);
    }
    out.push('\n');
    for alert in &a.alerts {
        let _ = writeln!(
            out,
            "  {} at {}",
            alert.summary(),
            netspectra_model::alert::rfc3339(alert.at_ns())
        );
    }
    out
}

/// `1 window`, `2 windows`: a count with its noun in the right number.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", num(n), if n == 1 { one } else { many })
}

/// Renders rows of cells as left/right aligned columns (numbers right).
pub(crate) fn columns(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        out.push_str("  ");
        for (i, cell) in cells.iter().enumerate() {
            let pad = width[i] - cell.chars().count();
            if right[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
            if i + 1 < cells.len() {
                out.push_str("  ");
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The default human-readable output.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "{} packets, {} bytes in {:.2} s ({:.2} Mpps, {})",
        num(r.packets),
        num(r.bytes),
        secs,
        r.packets as f64 / secs / 1e6,
        count(r.workers as u64, "worker", "workers")
    );
    let file_rows: Vec<Vec<String>> = r
        .files
        .iter()
        .map(|f| {
            vec![
                f.path.clone(),
                f.format.clone().unwrap_or_else(|| "-".into()),
                f.link_types.join(","),
                num(f.packets),
                num(f.bytes),
                f.error.clone().unwrap_or_else(|| "ok".into()),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &["file", "format", "link types", "packets", "bytes", "status"],
        &file_rows,
        &[false, false, false, true, true, false],
    ));
    let d = &r.decoded;
    let _ = write!(
        out,
        "\ndecoded: {} IPv4, {} IPv6, {} non-IP, {} malformed, {} unsupported link type; {} fragments, {} transport headers cut by snap length\n",
        num(d.ipv4),
        num(d.ipv6),
        num(d.non_ip),
        num(d.malformed),
        num(d.unsupported_link),
        num(d.fragments),
        num(d.l4_truncated)
    );
    if !d.malformed_by_reason.is_empty() {
        let reasons: Vec<String> = d
            .malformed_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {}", num(*v)))
            .collect();
        let _ = writeln!(out, "malformed: {}", reasons.join(", "));
    }
    if r.engine.late_packets > 0 {
        let _ = writeln!(
            out,
            "{} packets were out of time order and counted in the open window",
            num(r.engine.late_packets)
        );
    }
    match &r.store {
        Some((url, run)) => {
            let _ = writeln!(
                out,
                "stored: {url} (run {run}, {} of {} s)",
                count(r.engine.windows, "window", "windows"),
                r.window_ns as f64 / 1e9
            );
            if !r.replaced.is_empty() {
                let ids: Vec<String> = r.replaced.iter().map(i64::to_string).collect();
                let _ = writeln!(
                    out,
                    "replaced {} {} of the same input (same path, size and content): queries no longer count it; --append keeps both",
                    if ids.len() == 1 { "run" } else { "runs" },
                    ids.join(", ")
                );
            }
        }
        None => out.push_str("not stored (--no-store)\n"),
    }
    if let Some(a) = &r.alerts {
        out.push_str(&alerts_text(a));
    }
    for t in &r.engine.tasks {
        if let Some(sketch) = &t.sketch {
            sketch_table(&mut out, t, sketch, r.top);
            continue;
        }
        let shown = r.shown(t);
        let key_names: Vec<String> = t.key.iter().map(|d| d.to_string()).collect();
        let _ = write!(
            out,
            "\n{} ({}, key {}): {}, {} packets, {} bytes",
            t.name,
            t.kind.name(),
            key_names.join("+"),
            count(t.keys as u64, "key", "keys"),
            num(t.packets),
            num(t.bytes)
        );
        if shown.len() < t.keys {
            let _ = write!(out, "; top {} by bytes", shown.len());
        }
        out.push('\n');
        let mut header: Vec<&str> = key_names.iter().map(String::as_str).collect();
        header.extend(["packets", "bytes", "first_seen", "last_seen"]);
        let mut right = vec![false; key_names.len()];
        right.extend([true, true, false, false]);
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|(k, c)| {
                let mut row: Vec<String> = k
                    .render(&t.key)
                    .into_iter()
                    .map(|(_, v)| match v {
                        Value::String(s) => s,
                        // An untagged frame's VLAN: none.
                        Value::Null => "-".to_string(),
                        other => other.to_string(),
                    })
                    .collect();
                row.extend([
                    num(c.packets),
                    num(c.bytes),
                    format_rfc3339_ns(c.first_seen),
                    format_rfc3339_ns(c.last_seen),
                ]);
                row
            })
            .collect();
        out.push_str(&columns(&header, &rows, &right));
    }
    out
}

fn key_text(t: &TaskTotals, k: &FlowKey) -> String {
    k.render(&t.key)
        .into_iter()
        .map(|(_, v)| match v {
            Value::String(s) => s,
            Value::Null => "-".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sketch_table(out: &mut String, t: &TaskTotals, s: &SketchReport, top: usize) {
    let algorithm = match t.kind {
        TaskKind::Sketch(a) => a.name(),
        TaskKind::Exact => "exact",
    };
    let key_names = dims(&t.key).join("+");
    let _ = write!(out, "\n{} (sketch {algorithm}, key {key_names}", t.name);
    if !t.element.is_empty() {
        let _ = write!(out, ", distinct {}", dims(&t.element).join("+"));
    }
    let _ = writeln!(
        out,
        "): {} packets, {} bytes, {} of sketch memory",
        num(t.packets),
        num(t.bytes),
        bytes_text(s.memory_bytes)
    );
    let lists: Vec<(&str, &[Estimate])> = if algorithm == "superspread" {
        vec![("distinct", &s.spreaders)]
    } else {
        vec![("packets", &s.heavy_packets), ("bytes", &s.heavy_bytes)]
    };
    for (measure, list) in lists {
        let label = if measure == "distinct" {
            format!("super-spreaders by distinct {}", dims(&t.element).join("+"))
        } else {
            format!("heavy hitters by {measure}")
        };
        let shown = shown_estimates(top, list);
        let _ = write!(out, "  {label}:");
        if list.is_empty() {
            out.push_str(" none");
        } else if shown.len() < list.len() {
            let _ = write!(out, " top {} of {}", shown.len(), list.len());
        }
        out.push('\n');
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|e| {
                vec![
                    key_text(t, &e.key),
                    num(e.estimate),
                    bound_text(algorithm, e.error_bound),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&columns(
                &[&key_names, "estimate", "error bound"],
                &rows,
                &[false, true, true],
            ));
        }
    }
    if let Some(v) = &s.verify {
        for a in &v.sets {
            let _ = writeln!(
                out,
                "  verify {}: precision {:.3}, recall {:.3}, F1 {:.3}, avg relative error {:.2} % ({} reported, {} expected)",
                a.measure,
                a.precision,
                a.recall,
                a.f1,
                a.avg_relative_error * 100.0,
                a.reported,
                a.expected
            );
            for (k, v) in &a.worst_misses {
                let _ = writeln!(out, "    missed {} (true {})", key_text(t, k), num(*v));
            }
        }
    }
}

/// An estimate's error bound as the side it errs on: Count-Min only
/// overestimates (`≤ N over`: the truth lies in [estimate − N, estimate]),
/// the heavy-hitter buckets only underestimate (`≤ N under`), SuperSpread
/// errs both ways (`± N`, 2σ).
fn bound_text(algorithm: &str, bound: u64) -> String {
    match algorithm {
        "countmin" => format!("≤ {} over", num(bound)),
        "hh" => format!("≤ {} under", num(bound)),
        _ => format!("± {}", num(bound)),
    }
}

fn bytes_text(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
