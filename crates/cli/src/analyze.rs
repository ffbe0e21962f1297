//! `netspectra analyze`: flags → [`netspectra_node::offline::Analysis`],
//! a progress bar, the report (→ with `--serve`, the query API over the
//! store until Ctrl-C).

use crate::report::{self, OutputFormat};
use crate::serve::{self, ServeArgs};
use crate::Outcome;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use netspectra_node::offline::{Analysis, AnalysisConfig};
use netspectra_node::setup;
use std::io::IsTerminal;
use std::path::PathBuf;

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
    /// Engine workers, the thread reading the files being worker 0 (N threads in all); 0 = one per core (default: config `aggregator.num_workers`, else one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
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
    /// Keep earlier runs of the same inputs in the store. By default a
    /// re-analysis of the same files (same paths, sizes and content)
    /// replaces their earlier run, so answers never count them twice.
    #[arg(long, conflicts_with = "no_store")]
    append: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<Outcome> {
    let config = setup::load_config(args.config.as_deref())?;
    let store = setup::store_url(args.no_store, args.store.as_deref(), &config)?;
    let serve = args.serve.plan(&config, store.as_deref())?;
    let bar = progress_bar(&args.files);
    let report = Analysis::run(
        AnalysisConfig {
            files: args.files,
            config,
            workers: args.workers.map_or(0, usize::from),
            store,
            verify: args.verify,
            top: args.top,
            append: args.append,
        },
        &mut |p| {
            bar.set_position(p.bytes_read);
            let secs = p.elapsed.as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{} packets, {:.2} Mpps",
                p.packets,
                p.packets as f64 / secs / 1e6
            ));
        },
    )?;
    bar.finish_and_clear();
    match args.format {
        OutputFormat::Json => println!("{}", report::json(&report)),
        OutputFormat::Table => print!("{}", report::table(&report)),
    }
    if let Some(plan) = serve {
        std::io::Write::flush(&mut std::io::stdout())?;
        serve::serve_until_stopped(plan)?;
    }
    Ok(if report.damaged() {
        Outcome::Damaged
    } else {
        Outcome::Clean
    })
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
