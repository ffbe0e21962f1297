//! `netspectra`: one binary, a subcommand per role. Thin: it turns flags and
//! configuration into the role types of `netspectra-node`, renders what
//! they return and maps errors to exit codes; the work is done there.

mod ai;
mod alert;
mod analyze;
mod ask;
mod bench;
mod engine;
mod gen;
mod probe;
mod query;
mod report;
mod run;
mod serve;

use clap::{Parser, Subcommand};
use netspectra_model::redact::redact_secrets;
use std::process::ExitCode;

/// Exit status for usage and configuration errors (and failures at run time).
const EXIT_USAGE: u8 = 1;
/// Exit status when some input was damaged but results were produced.
const EXIT_DAMAGED: u8 = 2;
/// Exit status of `query` when the API refused the request (HTTP 4xx: a bad
/// parameter, an unknown task, a missing token): the request, not the
/// client or the server, is at fault, as with damaged input.
const EXIT_REFUSED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "netspectra",
    version,
    about = "High-performance network traffic monitoring and analysis",
    long_about = "High-performance network traffic monitoring and analysis.\n\n\
                  Start with `netspectra gen demo.pcap` then `netspectra analyze demo.pcap`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Count traffic in pcap/pcapng files: exact per-source, per-destination and per-flow totals.
    Analyze(analyze::AnalyzeArgs),
    /// Write deterministic synthetic traffic (and its truth) for tests and benchmarks.
    Gen(gen::GenArgs),
    /// Measure exact accounting vs. the sketches (insert, query, memory) and the engine's throughput.
    Bench(bench::BenchArgs),
    /// Live capture on this host: capture, engine and embedded store in one process.
    Run(run::RunArgs),
    /// Capture (live or from files) and publish packet batches to NATS.
    Probe(probe::ProbeArgs),
    /// Consume packet batches from NATS and write snapshots to a store.
    Engine(engine::EngineArgs),
    /// Serve the query API (gRPC and HTTP/JSON) from a store until Ctrl-C.
    Api(serve::ApiArgs),
    /// Evaluate alert rules over a store and send notifications (`alert backtest`: replay them over history).
    Alert(alert::AlertArgs),
    /// Serve the AI analyst over gRPC (Go2NetSpectra's AIService and NetSpectra's AnalystService), grounded in a store.
    Ai(ai::AiArgs),
    /// Ask the query API over HTTP: tasks, aggregate, top, trace, heavy hitters, super-spreaders, time series, runs.
    Query(query::QueryArgs),
    /// Ask the AI analyst about the stored traffic; the answer streams as it is written.
    Ask(ask::AskArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(|| RedactingStderr)
        .with_ansi(colour_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETSPECTRA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Gen(args) => gen::run(args).map(|()| Outcome::Clean),
        Command::Bench(args) => bench::run(args).map(|()| Outcome::Clean),
        Command::Run(args) => run::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Engine(args) => engine::run(args),
        Command::Api(args) => serve::run(args),
        Command::Query(args) => query::run(args),
        Command::Alert(args) => alert::run(args),
        Command::Ask(args) => ask::run(args),
        Command::Ai(args) => ai::run(args),
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Damaged) => ExitCode::from(EXIT_DAMAGED),
        Err(e) => {
            // Errors quote URLs (store, NATS, API): never with a password.
            eprintln!("error: {}", redact_secrets(&causes_once(&e)));
            if e.downcast_ref::<query::Refused>().is_some() {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::from(EXIT_USAGE)
            }
        }
    }
}

/// An error and its causes, `: `-separated, each cause once: a cause whose
/// text the message already holds (a library that both quotes its source
/// and returns it as `source()`) is not repeated.
fn causes_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether log lines may carry ANSI colours: only on a terminal, and never
/// when `NO_COLOR` is set (to anything non-empty, https://no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Standard error with every URL's password replaced by `***`: the last
/// guard in front of the log, whatever a library put in a log line.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call, so a URL is
        // never split between two writes.
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact_secrets(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How a command that produced results went.
pub enum Outcome {
    /// Every input was read completely.
    Clean,
    /// Some input was damaged; results cover what could be read.
    Damaged,
}
