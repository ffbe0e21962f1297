//! Every role started and stopped in-process, without the binary: the life
//! cycle (`start` → `describe` → `wait(&shutdown)`) the CLI relies on, with
//! counts checked against the generator's truth or what the test sent.

mod ai;
mod alerts;
mod analyst;
mod api;
mod distributed;
mod elastic;
mod live;
mod offline;

use netspectra_bus::{BatchLimits, BusConfig};
use netspectra_capture::gen::{generate, GenOptions, Truth};
use netspectra_model::config::Config;
use netspectra_node::probe::{default_align_ns, Probe, ProbeConfig, ProbeInput};
use netspectra_node::Shutdown;
use std::path::{Path, PathBuf};

/// A probe replaying `path` into NATS at `url` (at its own pace with
/// `realtime`), batches aligned to `config`'s windows, from a thread that
/// returns the probe's JSON summary.
pub fn replay(
    url: String,
    path: PathBuf,
    jetstream: bool,
    realtime: bool,
    config: &Config,
) -> std::thread::JoinHandle<serde_json::Value> {
    let align_ns = default_align_ns(config);
    std::thread::spawn(move || {
        let probe = Probe::start(ProbeConfig {
            input: ProbeInput::Files {
                paths: vec![path],
                realtime,
            },
            bus: BusConfig {
                name: "probe test".into(),
                jetstream,
                ..BusConfig::new(url)
            },
            probe_id: "probe-test".into(),
            limits: BatchLimits {
                align_ns,
                ..BatchLimits::default()
            },
            metrics: None,
        })
        .unwrap();
        probe.wait(&Shutdown::new()).unwrap().json()
    })
}

/// A generated capture analysed (default tasks, one worker) into a fresh
/// SQLite store in `dir`: the store's URL and the capture's truth.
pub fn stored_capture(dir: &Path, packets: u64, seed: u64) -> (String, Truth) {
    let (path, truth) = capture(dir, packets, seed);
    let url = format!("sqlite:{}", dir.join("ns.db").display());
    netspectra_node::offline::Analysis::run(
        netspectra_node::offline::AnalysisConfig {
            files: vec![path],
            config: Config::default(),
            workers: 1,
            store: Some(url.clone()),
            verify: false,
            top: 10,
            append: false,
        },
        &mut |_| {},
    )
    .unwrap();
    (url, truth)
}

/// A generated capture of `packets` frames in `dir`, with its truth.
pub fn capture(dir: &Path, packets: u64, seed: u64) -> (PathBuf, Truth) {
    let path = dir.join(format!("gen-{seed}.pcap"));
    let truth = generate(
        &path,
        &GenOptions {
            packets,
            seed,
            ..GenOptions::default()
        },
    )
    .expect("generate a capture");
    (path, truth)
}
