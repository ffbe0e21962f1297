//! The engine's JetStream progress as the store keeps it (`bus_progress.state`):
//! which batches it has applied, so a restarted engine skips redeliveries of
//! batches whose windows were already stored.
//!
//! Format (**contract** of the store's `bus_progress` table):
//! `{"format":1,"run_id":R,"through_ns":T,"applied":[{"probe":P,"shard":S,"ranges":[[first,last],…],"seen_ns":N},…]}`
//! (`seen_ns`: when the probe's last batch was applied, wall clock; optional)
//! where `run_id` and `through_ns` (optional; older writers omit them) say
//! which run wrote it and the end of the last window whose rows precede it:
//! rows of that run from `through_ns` on are not covered by any progress.
//!
//! ```
//! use netspectra_bus::{progress, Dedupe};
//! let mut d = Dedupe::default();
//! assert!(d.accept("probe-a", 3, 7));
//! let back = progress::decode(&progress::encode(&d, None)).unwrap();
//! assert!(!back.clone().accept("probe-a", 3, 7), "already applied");
//! ```

use crate::Dedupe;
use serde_json::{json, Value};

/// The stored progress cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// Not JSON at all.
    #[error("progress is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Written by a newer NetSpectra.
    #[error("unknown progress format {0}")]
    Format(Value),
    /// JSON, but not of the expected shape.
    #[error("malformed progress {0}")]
    Malformed(String),
}

/// Name of the `bus_progress` consumer a JetStream engine stores its
/// progress under.
pub fn consumer_name(prefix: &str) -> String {
    format!("jetstream:{prefix}")
}

/// Which run wrote a progress, and up to where its rows are covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The run whose rows precede this progress.
    pub run_id: i64,
    /// End (ns) of the last window stored before this progress.
    pub through_ns: u64,
}

/// The applied batches of `d` as stored (with who wrote them, if known).
pub fn encode(d: &Dedupe, written: Option<Written>) -> String {
    let applied: Vec<Value> = d
        .ranges()
        .map(|(probe, shard, ranges)| {
            json!({"probe": probe, "shard": shard, "ranges": ranges,
                   "seen_ns": d.seen(probe).unwrap_or(0)})
        })
        .collect();
    match written {
        Some(w) => json!({"format": 1, "run_id": w.run_id, "through_ns": w.through_ns,
                          "applied": applied}),
        None => json!({"format": 1, "applied": applied}),
    }
    .to_string()
}

/// The run and window end a stored progress names (None: older format).
pub fn written(state: &str) -> Option<Written> {
    let v: Value = serde_json::from_str(state).ok()?;
    Some(Written {
        run_id: v["run_id"].as_i64()?,
        through_ns: v["through_ns"].as_u64()?,
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Reads [`encode`]'s output back.
pub fn decode(state: &str) -> Result<Dedupe, ProgressError> {
    let v: Value = serde_json::from_str(state)?;
    if v["format"].as_u64() != Some(1) {
        return Err(ProgressError::Format(v["format"].clone()));
    }
    let bad = || ProgressError::Malformed(state.chars().take(200).collect());
    let mut d = Dedupe::default();
    for e in v["applied"].as_array().ok_or_else(bad)? {
        let probe = e["probe"].as_str().ok_or_else(bad)?;
        let shard = e["shard"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(bad)?;
        for r in e["ranges"].as_array().ok_or_else(bad)? {
            let (Some(first), Some(last)) = (r[0].as_u64(), r[1].as_u64()) else {
                return Err(bad());
            };
            d.mark_applied(probe, shard, first, last);
        }
        // Older progress has no time: take it as seen now.
        let seen = e["seen_ns"]
            .as_u64()
            .filter(|&t| t > 0)
            .unwrap_or_else(now_ns);
        d.note_seen(probe, seen);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_json() {
        let mut d = Dedupe::default();
        for seq in [1u64, 2, 3, 9, 10] {
            assert!(d.accept("probe-a", 4, seq));
        }
        assert!(d.accept("probe-b", 0, 7));
        let w = Written {
            run_id: 7,
            through_ns: 1_000,
        };
        let state = encode(&d, Some(w));
        assert_eq!(written(&state), Some(w));
        assert_eq!(written(&encode(&d, None)), None);
        let back = decode(&state).unwrap();
        let sorted = |d: &Dedupe| {
            let mut v: Vec<_> = d
                .ranges()
                .map(|(p, s, r)| (p.to_string(), s, r.to_vec()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&back), sorted(&d));
        assert!(decode("{\"format\":2,\"applied\":[]}").is_err());
        assert!(decode("{\"format\":1,\"applied\":[{\"probe\":\"p\"}]}").is_err());
        assert!(decode("not json").is_err());
    }
}
