//! The vocabulary every NetSpectra crate speaks.
//!
//! A capture is decoded into [`PacketRecord`]s; tasks project a record onto a
//! [`FlowKey`] made of [`Dimension`]s; windows and timestamps are plain
//! nanoseconds since the Unix epoch ([`time`]); the whole pipeline is driven
//! by one [`config::Config`].
//!
//! Modules:
//!
//! - [`alert`]: an alert transition as the stores keep it.
//! - [`record`]: [`PacketRecord`], one decoded packet.
//! - [`dimension`]: [`Dimension`]s and the [`FlowKey`] a task projects a
//!   record onto.
//! - [`ip`]: addresses as 16 bytes, IPv4 stored IPv4-mapped.
//! - [`time`]: timestamps (ns since the Unix epoch) and durations as
//!   people write them.
//! - [`config`]: the configuration (YAML), validated at load.
//! - [`redact`]: passwords out of URLs before they are shown or stored.
//! - [`task`]: the configured tasks as they run ([`task::TaskSpec`],
//!   [`task::TaskKind`], resolved [`task::SketchParams`];
//!   [`task::configured_tasks`] lists them from a configuration).
//! - [`window`]: what a run produces and where it goes — a window's exact
//!   rows ([`window::WindowResult`] of [`window::FlowCounters`]), a sketch
//!   task's [`window::SketchPeriod`] of [`window::Estimate`]s, and the
//!   [`window::WindowSink`] a store implements. The engine produces them,
//!   the stores keep them, neither depends on the other.
//!
//! ```
//! use netspectra_model::{Dimension, FlowKey, PacketRecord, ip};
//!
//! let mut rec = PacketRecord::default();
//! rec.src_ip = ip::from_v4([10, 0, 0, 1]);
//! rec.src_port = 1234;
//! let dims = [Dimension::SrcIp];
//! let key = FlowKey::project(&rec, &dims);
//! assert_eq!(key.render(&dims)[0].1.to_string(), "\"10.0.0.1\"");
//! ```

pub mod alert;
pub mod config;
pub mod dimension;
pub mod ip;
pub mod record;
pub mod redact;
pub mod task;
pub mod time;
pub mod window;

pub use dimension::{Dimension, FlowKey, Projection};
pub use record::{DecodeCounters, Malformed, PacketRecord, L3, NO_VLAN};

/// `1234567` → `1,234,567`: counts as reports and the analyst write them.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `name` with every character other than ASCII letters, digits, `-` and `_`
/// replaced by `_`: safe as a file name component and a NATS consumer name.
pub fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = crate::config::Config::from_yaml(
            "ai: {api_key: sk-hunter2, model: m}\nsmtp: {host: h, password: hunter2}\n",
            &|_| None,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<set>"));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
