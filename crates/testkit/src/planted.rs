//! A capture for alerting tests, with its truth computed from the packets
//! written (never by decoding): background sources in every window, two big
//! talkers and a scanner planted in known windows, as pcap files.

use netspectra_model::alert::AlertRecord;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

const S: u64 = 1_000_000_000;
/// First window start: 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600 * S;
/// Window (and sketch period) length.
pub const WINDOW: u64 = 10 * S;
/// Windows in the capture.
pub const WINDOWS: u64 = 8;
/// Bytes above which a source is a big talker in a window.
pub const BIG: u64 = 100_000;
/// Distinct destinations above which a source is a scanner in a period.
pub const SCAN: u64 = 1_000;

/// One packet: time, IPv4 source, destination, bytes on the wire.
pub type Packet = (u64, [u8; 4], [u8; 4], u32);

/// Background of 40 sources with 5 packets each in every window; big
/// talker 10.9.0.1 in windows 1–3, big talker 10.9.0.2 in window 5 only,
/// scanner 10.8.0.1 (1 500 destinations) in windows 2–4. Time ordered.
pub fn traffic() -> Vec<Packet> {
    let mut out = Vec::new();
    for w in 0..WINDOWS {
        let base = T0 + w * WINDOW;
        let mut i = 0u64;
        let mut push = |src: [u8; 4], dst: [u8; 4], len: u32| {
            out.push((base + i * 1_000_000, src, dst, len));
            i += 1;
        };
        for src in 0..40u8 {
            for k in 0..5u8 {
                push([10, 0, 0, src], [192, 168, 0, k], 200);
            }
        }
        if (1..=3).contains(&w) {
            for k in 0..150u32 {
                push([10, 9, 0, 1], [192, 168, 1, (k % 7) as u8], 1_000);
            }
        }
        if w == 5 {
            for k in 0..120u32 {
                push([10, 9, 0, 2], [192, 168, 1, (k % 3) as u8], 1_200);
            }
        }
        if (2..=4).contains(&w) {
            for d in 0..1_500u32 {
                push([10, 8, 0, 1], [172, 16, (d >> 8) as u8, d as u8], 64);
            }
        }
    }
    out.sort_by_key(|p| p.0);
    out
}

/// The packets of windows `[from, to)`.
pub fn windows(packets: &[Packet], from: u64, to: u64) -> Vec<Packet> {
    packets
        .iter()
        .copied()
        .filter(|p| (T0 + from * WINDOW..T0 + to * WINDOW).contains(&p.0))
        .collect()
}

/// What rules `bytes > BIG` on `per_src_ip` (named `big_talker`) and
/// distinct destinations `> SCAN` on `per_src_ip_spread` (`scanner`) must
/// find: `(state, rule, source, evaluation time)` per transition, ordered
/// by time, rule, source.
pub fn truth(packets: &[Packet]) -> Vec<(String, String, String, u64)> {
    let mut bytes: BTreeMap<(u64, [u8; 4]), u64> = BTreeMap::new();
    let mut dsts: BTreeMap<(u64, [u8; 4]), HashSet<[u8; 4]>> = BTreeMap::new();
    for &(t, s, d, len) in packets {
        let w = (t - T0) / WINDOW;
        *bytes.entry((w, s)).or_default() += u64::from(len);
        dsts.entry((w, s)).or_default().insert(d);
    }
    let mut holds: BTreeSet<(&str, u64, [u8; 4])> = BTreeSet::new();
    for (&(w, s), &b) in &bytes {
        if b > BIG {
            holds.insert(("big_talker", w, s));
        }
    }
    for ((w, s), d) in &dsts {
        if d.len() as u64 > SCAN {
            holds.insert(("scanner", *w, *s));
        }
    }
    let mut out = Vec::new();
    for rule in ["big_talker", "scanner"] {
        let keys: BTreeSet<[u8; 4]> = holds.iter().filter(|h| h.0 == rule).map(|h| h.2).collect();
        for key in keys {
            let ip = format!("{}.{}.{}.{}", key[0], key[1], key[2], key[3]);
            let mut firing = false;
            for w in 0..WINDOWS {
                let on = holds.contains(&(rule, w, key));
                let end = T0 + (w + 1) * WINDOW;
                if on != firing {
                    let state = if on { "firing" } else { "resolved" };
                    out.push((state.to_string(), rule.to_string(), ip.clone(), end));
                }
                firing = on;
            }
        }
    }
    out.sort_by(|a, b| (a.3, &a.1, &a.2).cmp(&(b.3, &b.1, &b.2)));
    out
}

/// Writes `packets` as a nanosecond pcap: Ethernet, IPv4, UDP headers
/// captured, the wire length as given.
pub fn write_pcap(path: &Path, packets: &[Packet]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    // Magic (ns), version 2.4, zone, sigfigs, snaplen, Ethernet.
    w.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0; 8])?;
    w.write_all(&65_535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    for &(t, src, dst, wire) in packets {
        let frame = frame(src, dst, wire);
        w.write_all(&((t / S) as u32).to_le_bytes())?;
        w.write_all(&((t % S) as u32).to_le_bytes())?;
        w.write_all(&(frame.len() as u32).to_le_bytes())?;
        w.write_all(&wire.to_le_bytes())?;
        w.write_all(&frame)?;
    }
    w.flush()
}

/// Ethernet + IPv4 + UDP headers for a `wire`-byte packet.
fn frame(src: [u8; 4], dst: [u8; 4], wire: u32) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (wire - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&40_000u16.to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// The rules [`truth`] is about, as config lines, to webhook `hook`, plus
/// `extra` rules: windows and periods of [`WINDOW`].
pub fn config_yaml(hook: &str, extra: &[&str]) -> String {
    let mut lines = vec![
        "aggregator:".to_string(),
        "  period: 10s".into(),
        "  snapshot_interval: 10s".into(),
        "  num_workers: 2".into(),
        "alerter:".into(),
        "  enabled: true".into(),
        "  check_interval: 1s".into(),
        "  rules:".into(),
        format!("    - {{name: big_talker, task_name: per_src_ip, metric: bytes, operator: '>', threshold: {BIG}}}"),
        format!("    - {{name: scanner, task_name: per_src_ip_spread, metric: super_spreader_spread, operator: '>', threshold: {SCAN}, severity: critical}}"),
    ];
    lines.extend(extra.iter().map(|r| format!("    - {r}")));
    lines.push("  notifiers:".into());
    lines.push(format!(
        "    - {{name: hook, type: webhook, url: '{hook}'}}"
    ));
    lines.join("\n") + "\n"
}

/// `(state, rule, source, evaluation time)` of transitions, ordered as
/// [`truth`], to compare with it.
pub fn seen(alerts: &[AlertRecord]) -> Vec<(String, String, String, u64)> {
    let mut out: Vec<_> = alerts
        .iter()
        .map(|a| {
            let key: serde_json::Value = serde_json::from_str(&a.key).unwrap_or_default();
            (
                a.state.clone(),
                a.rule.clone(),
                key["SrcIP"].as_str().unwrap_or_default().to_string(),
                a.at_ns(),
            )
        })
        .collect();
    out.sort_by(|a, b| (a.3, &a.1, &a.2).cmp(&(b.3, &b.1, &b.2)));
    out
}

/// The transitions in webhook bodies (each `{"alerts": [...]}`), in order.
pub fn from_bodies(bodies: &[String]) -> Vec<AlertRecord> {
    bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .flat_map(|v| {
            v["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(AlertRecord::from_json)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_three_instances_that_fire_and_resolve() {
        let t = truth(&traffic());
        assert_eq!(t.len(), 6, "{t:?}");
        let body = r#"{"alerts":[{"rule":"scanner","task":"t","key":{"SrcIP":"10.8.0.1"},"metric":"distinct","value":1517,"operator":">","threshold":1000,"severity":"critical","state":"resolved","window_start":"2026-01-01T00:00:40Z","starts_at":"2026-01-01T00:00:30Z","ends_at":"2026-01-01T00:01:00Z","analysis":null}]}"#;
        assert_eq!(
            seen(&from_bodies(&[body.to_string()])),
            vec![(
                "resolved".into(),
                "scanner".into(),
                "10.8.0.1".into(),
                T0 + 6 * WINDOW
            )]
        );
    }
}
