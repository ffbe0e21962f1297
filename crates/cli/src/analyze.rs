//! `netspectra analyze`: capture files → decode → engine → store → report
//! (→ with `--serve`, the query API over the store until Ctrl-C).

use crate::common::{self, RunStore};
use crate::report::{self, FileReport, OutputFormat, Report};
use crate::serve::{self, ServeArgs};
use crate::Outcome;
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use netspectra_capture::decode::decode;
use netspectra_capture::reader::CaptureReader;
use netspectra_engine::{Engine, EngineInput, EnginePlan};
use netspectra_model::{DecodeCounters, PacketRecord};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `netspectra analyze` (**contract**).
#[derive(Args)]
pub struct AnalyzeArgs {
    /// pcap or pcapng files, read in the order given.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// YAML configuration (built-in defaults when absent).
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Rows shown per task, by bytes; 0 = all.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Engine workers (default: config `aggregator.num_workers`, else one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Result store: `sqlite:PATH` or a file path (default: config `store.url`, `sqlite:netspectra.db`).
    #[arg(long, value_name = "URL", conflicts_with = "no_store")]
    store: Option<String>,
    /// Keep results in memory only.
    #[arg(long, conflicts_with = "serve")]
    no_store: bool,
    /// Run an exact computation beside every sketch task and report its
    /// accuracy (precision, recall, F1, relative error, worst misses).
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Records are decoded into one reused value; progress is refreshed every
/// this many packets.
const PROGRESS_EVERY: u64 = 1 << 16;

pub fn run(args: AnalyzeArgs) -> anyhow::Result<Outcome> {
    for f in &args.files {
        if !f.exists() {
            bail!("input file {} does not exist", f.display());
        }
    }
    let config = common::load_config(args.config.as_deref())?;
    let mut plan = EnginePlan::from_config(&config, args.workers.map_or(0, usize::from))?;
    plan.verify = args.verify;
    let url = common::store_url(args.no_store, args.store.as_deref(), &config);
    let serve = args.serve.plan(&config, url.as_deref())?;
    let inputs = serde_json::Value::from(
        args.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>(),
    );
    let window_ns = plan.window_ns;
    let workers = plan.workers;
    let (mut run_store, sink) = RunStore::begin(url, "local", &inputs, &plan.tasks, window_ns)?;

    let started = Instant::now();
    let mut engine = Engine::start(plan, sink)?;
    let progress = progress_bar(&args.files);
    let mut decoded = DecodeCounters::default();
    let mut files = Vec::with_capacity(args.files.len());
    let mut total = (0u64, 0u64);
    let mut done_bytes = 0;
    for path in &args.files {
        let file = read_file(
            path,
            &mut engine,
            &mut decoded,
            &progress,
            done_bytes,
            started,
        );
        total.0 += file.packets;
        total.1 += file.bytes;
        done_bytes += std::fs::metadata(path).map_or(0, |m| m.len());
        files.push(file);
    }
    progress.finish_and_clear();
    let mut output = engine.finish().context("engine failed")?;
    for task in &mut output.tasks {
        task.top(args.top);
    }
    let elapsed = started.elapsed();

    let damaged = files.iter().any(|f| f.error.is_some());
    let report = Report {
        files,
        packets: total.0,
        bytes: total.1,
        decoded,
        elapsed,
        workers,
        window_ns,
        store: run_store.describe(),
        engine: output,
        top: args.top,
    };
    run_store.finish(if damaged { "damaged" } else { "complete" }, &report)?;
    match args.format {
        OutputFormat::Json => println!("{}", report::json(&report)),
        OutputFormat::Table => print!("{}", report::table(&report)),
    }
    if let Some(plan) = serve {
        std::io::Write::flush(&mut std::io::stdout())?;
        let stop = common::stop_flag()?;
        let store = serve::store_text(&plan.url);
        let api = serve::Api::start(plan)?;
        eprintln!("serving {} from {store}; stop with Ctrl-C", api.describe());
        api.serve_until(&stop)?;
    }
    Ok(if damaged {
        Outcome::Damaged
    } else {
        Outcome::Clean
    })
}

/// Reads one file into the engine. A damaged or unreadable file keeps what
/// was read before the damage and reports the error; the run goes on.
fn read_file(
    path: &std::path::Path,
    engine: &mut EngineInput,
    decoded: &mut DecodeCounters,
    progress: &ProgressBar,
    done_bytes: u64,
    started: Instant,
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
                if report.packets % PROGRESS_EVERY == 0 {
                    progress.set_position(done_bytes + reader.bytes_read());
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    progress.set_message(format!(
                        "{} packets, {:.2} Mpps",
                        engine.packets(),
                        engine.packets() as f64 / secs / 1e6
                    ));
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(message = "damaged capture", file = %path.display(), error = %e);
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    report.link_types = reader.link_types().iter().map(|l| l.name()).collect();
    report
}

fn progress_bar(files: &[PathBuf]) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% {bytes}/{total_bytes} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
