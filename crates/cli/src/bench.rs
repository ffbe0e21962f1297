//! `netspectra bench`: flags → [`netspectra_node::bench`], and its report.

use crate::report::OutputFormat;
use clap::Args;
use netspectra_node::bench::{self, BenchConfig};
use std::path::PathBuf;

/// Arguments of `netspectra bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Frames to generate for the trace (not with --file).
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "file")]
    packets: u64,
    /// Seed of the generated trace (not with --file).
    #[arg(long, value_name = "S", default_value_t = 1, conflicts_with = "file")]
    seed: u64,
    /// Workers of the multi-worker engine run (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
    workers: Option<u16>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Benchmark on this pcap/pcapng capture instead of a generated trace.
    #[arg(long, value_name = "CAPTURE")]
    file: Option<PathBuf>,
}

/// Runs `netspectra bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let cfg = BenchConfig {
        packets: args.packets,
        seed: args.seed,
        workers: args.workers.map_or(0, usize::from),
        file: args.file,
    };
    let results = bench::run(&cfg, &|msg| eprintln!("bench: {msg}"))?;
    match args.format {
        OutputFormat::Json => println!("{}", results.json()),
        OutputFormat::Table => print!("{}", results.table()),
    }
    Ok(())
}
