//! What a finished analysis (offline or live) produced, before rendering:
//! the binary turns a [`Report`] into the table or the JSON contract, and
//! the store records its totals.

use netspectra_engine::{EngineOutput, FlowCounters, TaskTotals};
use netspectra_model::{DecodeCounters, FlowKey};
use serde::Serialize;
use std::time::Duration;

/// Outcome of reading one input (a file, or an interface for live runs).
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// The path as given (`iface:NAME` for a live capture).
    pub path: String,
    /// `pcap` / `pcapng` / `live`, or None when the file could not be opened as a capture.
    pub format: Option<String>,
    /// Link types seen, by name.
    pub link_types: Vec<String>,
    /// Frames read.
    pub packets: u64,
    /// Their bytes on the wire.
    pub bytes: u64,
    /// Why reading stopped early (damage with its byte offset), if it did.
    pub error: Option<String>,
}

/// Everything a finished analysis reports.
pub struct Report {
    /// One entry per input, in the order read.
    pub files: Vec<FileReport>,
    /// Frames read over all inputs.
    pub packets: u64,
    /// Their bytes on the wire.
    pub bytes: u64,
    /// What the decoder made of the frames.
    pub decoded: DecodeCounters,
    /// Wall time of the analysis.
    pub elapsed: Duration,
    /// Engine workers used.
    pub workers: usize,
    /// Window length (ns of packet time).
    pub window_ns: u64,
    /// Store URL and run id, when results were stored.
    pub store: Option<(String, i64)>,
    /// Per-task totals (rows ranked by `TaskTotals::top`).
    pub engine: EngineOutput,
    /// Rows shown per task; 0 = all.
    pub top: usize,
    /// What the in-process alerter found and sent (`alerter.enabled`).
    pub alerts: Option<crate::alerter::AlertOutcome>,
    /// Earlier runs of the same inputs this run replaced in the store.
    pub replaced: Vec<i64>,
}

impl Report {
    /// Whether some input was damaged (results cover what was read).
    pub fn damaged(&self) -> bool {
        self.files.iter().any(|f| f.error.is_some())
    }

    /// The rows to show: the prefix that `TaskTotals::top` ranked.
    pub fn shown<'a>(&self, task: &'a TaskTotals) -> &'a [(FlowKey, FlowCounters)] {
        if self.top == 0 {
            &task.rows
        } else {
            &task.rows[..task.rows.len().min(self.top)]
        }
    }
}

/// `1234567` → `1,234,567`: counts as the reports print them.
pub use netspectra_model::thousands;
