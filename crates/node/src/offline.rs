//! Offline analysis (`netspectra analyze`): capture files → decode → engine
//! → store, and the [`Report`] of what was found.

use crate::alerter::InProcess;
use crate::error::{Context, NodeError};
use crate::identity;
use crate::report::{FileReport, Report};
use crate::setup::RunStore;
use netspectra_capture::decode::decode;
use netspectra_capture::reader::{CaptureError, CaptureReader};
use netspectra_engine::{Engine, EngineInput, EnginePlan};
use netspectra_model::config::Config;
use netspectra_model::{DecodeCounters, PacketRecord};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to analyze and where results go.
pub struct AnalysisConfig {
    /// pcap or pcapng files, read in this order.
    pub files: Vec<PathBuf>,
    /// Tasks, windows and workers.
    pub config: Config,
    /// Engine workers, the reading thread being worker 0 (0: `aggregator.num_workers`, and 0 there: one per core).
    pub workers: usize,
    /// Store URL (`None`: results in memory only).
    pub store: Option<String>,
    /// Run an exact shadow beside every sketch task and report its accuracy.
    pub verify: bool,
    /// Rows kept per task in the report, by bytes (0 = all).
    pub top: usize,
    /// Keep earlier runs of the same inputs (default: replace them, so a
    /// repeated analysis does not count the capture twice).
    pub append: bool,
}

/// Progress of a running analysis, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct AnalysisProgress {
    /// Bytes of the input files read so far.
    pub bytes_read: u64,
    /// IP packets given to the engine so far.
    pub packets: u64,
    /// Since the analysis started.
    pub elapsed: Duration,
}

/// Records are decoded into one reused value; progress is reported every
/// this many packets.
const PROGRESS_EVERY: u64 = 1 << 16;

/// The offline analysis role. It has no stop signal of its own: it ends
/// with its input.
pub struct Analysis;

impl Analysis {
    /// Reads every file into the engine and stores the run. A damaged file
    /// keeps what was read before the damage, names its error in its
    /// [`FileReport`] and the run goes on ([`Report::damaged`]). An input
    /// that is missing, unreadable or not a capture at all is a usage
    /// error: every such input is named and nothing is read or stored.
    pub fn run(
        cfg: AnalysisConfig,
        progress: &mut dyn FnMut(AnalysisProgress),
    ) -> Result<Report, NodeError> {
        check_inputs(&cfg.files)?;
        let mut plan = EnginePlan::from_config(&cfg.config, cfg.workers)?;
        plan.verify = cfg.verify;
        // A file waits for its reader: the reader is worker 0, so
        // `--workers N` is N threads and 1 worker is one core's work.
        plan.inline_worker = true;
        plan.top_rows = cfg.top;
        let inputs = serde_json::Value::from(
            cfg.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>(),
        );
        let window_ns = plan.window_ns;
        let workers = plan.workers;
        let store = cfg.store.clone();
        let (mut run_store, sink) = RunStore::begin(
            cfg.store,
            &cfg.config.store,
            "local",
            &inputs,
            &plan.tasks,
            window_ns,
            // A file's windows come as fast as it is read: grouped, they
            // are written once (see `Commits`).
            netspectra_store::Commits::Grouped,
        )?;

        let (sink, alerting) = InProcess::wrap(&cfg.config, &plan.tasks, store.as_deref(), sink)?;
        let started = Instant::now();
        let mut engine = Engine::start(plan, sink)?;
        let mut decoded = DecodeCounters::default();
        let mut files = Vec::with_capacity(cfg.files.len());
        let mut total = (0u64, 0u64);
        let mut done_bytes = 0;
        for path in &cfg.files {
            let mut tick = |read: u64, packets: u64| {
                progress(AnalysisProgress {
                    bytes_read: done_bytes + read,
                    packets,
                    elapsed: started.elapsed(),
                });
            };
            let file = read_file(path, &mut engine, &mut decoded, &mut tick);
            total.0 += file.packets;
            total.1 += file.bytes;
            done_bytes += std::fs::metadata(path).map_or(0, |m| m.len());
            files.push(file);
        }
        let mut output = engine.finish().context("engine failed")?;
        for task in &mut output.tasks {
            task.top(cfg.top);
        }
        let alerts = alerting.map(InProcess::finish);
        let report = Report {
            files,
            packets: total.0,
            bytes: total.1,
            decoded,
            elapsed: started.elapsed(),
            workers,
            window_ns,
            store: run_store.describe(),
            engine: output,
            top: cfg.top,
            alerts,
            replaced: Vec::new(),
        };
        let status = if report.damaged() {
            "damaged"
        } else {
            "complete"
        };
        run_store.set_identities(cfg.files.iter().map(|f| identity::of_file(f)).collect());
        run_store.finish(status, &report)?;
        let mut report = report;
        if !cfg.append {
            report.replaced = run_store.replace_same_inputs();
        }
        Ok(report)
    }
}

/// Refuses the run, before anything is read or stored, when some input is
/// missing, unreadable or not a pcap/pcapng capture (naming each): a wrong
/// argument, not damage (exit 1, where damage after valid data is exit 2).
fn check_inputs(files: &[PathBuf]) -> Result<(), NodeError> {
    let mut problems = Vec::new();
    for f in files {
        if !f.exists() {
            problems.push(format!("input file {} does not exist", f.display()));
            continue;
        }
        match CaptureReader::open(f) {
            Ok(_) | Err(CaptureError::Damaged { .. }) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(NodeError::invalid(format!(
            "{}; nothing was analyzed",
            problems.join("; ")
        )))
    }
}

/// Reads one file into the engine. A damaged or unreadable file keeps what
/// was read before the damage and reports the error; the run goes on.
fn read_file(
    path: &Path,
    engine: &mut EngineInput,
    decoded: &mut DecodeCounters,
    tick: &mut dyn FnMut(u64, u64),
) -> FileReport {
    let mut report = FileReport {
        path: path.display().to_string(),
        format: None,
        link_types: Vec::new(),
        packets: 0,
        bytes: 0,
        error: None,
    };
    let mut reader = match CaptureReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.format = Some(reader.format().to_string());
    let mut rec = PacketRecord::default();
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                decode(p.link_type, p.data, &mut rec);
                rec.ts_ns = p.ts_ns;
                rec.wire_len = p.wire_len;
                rec.cap_len = p.data.len() as u32;
                report.packets += 1;
                report.bytes += u64::from(p.wire_len);
                decoded.count(&rec);
                engine.push(&rec);
                if report.packets.is_multiple_of(PROGRESS_EVERY) {
                    tick(reader.bytes_read(), engine.packets());
                }
            }
            Ok(None) => break,
            Err(e) => {
                // Reported once, in the file's row of the report (not also
                // as a log line).
                tracing::debug!(message = "damaged capture", file = %path.display(), error = %e);
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    report.link_types = reader.link_types().iter().map(|l| l.name()).collect();
    report
}
