//! `netspectra gen`: synthetic captures with their truth.

use anyhow::Context;
use clap::{Args, ValueEnum};
use netspectra_capture::gen::{generate, truth_path, GenFormat, GenOptions};
use std::path::PathBuf;

/// Arguments of `netspectra gen` (**contract**).
#[derive(Args)]
pub struct GenArgs {
    /// Capture file to write; its truth goes to OUT.truth.json.
    #[arg(value_name = "OUT")]
    out: PathBuf,
    /// Number of frames.
    #[arg(long, default_value_t = 100_000)]
    packets: u64,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// File format.
    #[arg(long, value_enum, default_value_t = FormatArg::Pcap)]
    format: FormatArg,
    /// Extra planted super-spreaders, by their number of distinct destinations.
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    spreaders: Vec<u32>,
    /// Overwrite OUT (and OUT.truth.json) when they exist.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Pcap,
    Pcapng,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    if !args.force {
        for path in [args.out.clone(), truth_path(&args.out)] {
            if path.exists() {
                anyhow::bail!(
                    "{} exists; pass --force to overwrite it, or choose another name",
                    path.display()
                );
            }
        }
    }
    let opts = GenOptions {
        packets: args.packets,
        seed: args.seed,
        format: match args.format {
            FormatArg::Pcap => GenFormat::Pcap,
            FormatArg::Pcapng => GenFormat::PcapNg,
        },
        spreaders: args.spreaders,
    };
    let started = std::time::Instant::now();
    let truth =
        generate(&args.out, &opts).with_context(|| format!("generating {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} packets, {} bytes) and {} in {:.2} s",
        args.out.display(),
        truth.packets,
        truth.bytes,
        truth_path(&args.out).display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
