//! Every role started and stopped in-process, without the binary: the life
//! cycle (`start` → `describe` → `wait(&shutdown)`) the CLI relies on, with
//! counts checked against the generator's truth or what the test sent.

mod api;
mod distributed;
mod elastic;
mod live;
mod offline;

use netspectra_capture::gen::{generate, GenOptions, Truth};
use std::path::{Path, PathBuf};

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
