//! Generates the protobuf types with prost-build and the vendored protoc
//! (no system protoc needed), one compile per protobuf package so that each
//! package's file in `OUT_DIR` is written once, complete:
//!
//! - `v1.rs` — Go2NetSpectra's package `v1`: `traffic.proto` (`FiveTuple`,
//!   `PacketInfo`), `query.proto` (its `QueryService`, over NetSpectra's
//!   query messages) and `ai.proto` (its `AIService`, as it was).
//! - `netspectra.v1.rs` — NetSpectra's package `netspectra.v1`:
//!   `packets.proto` (which reuses Go2NetSpectra's `FiveTuple`), the query
//!   API's `query.proto` and the analyst's `analyst.proto`.
//!
//! With the `grpc` feature tonic-prost-build adds each service's server
//! and client; without it only the messages are generated. Either
//! way protoc writes each package's descriptor set (with its imports),
//! which the query API serves through gRPC reflection.

use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let include = protoc_bin_vendored::include_path().expect("vendored protoc include path");
    let includes = [Path::new("proto"), include.as_path()];
    println!("cargo:rerun-if-changed=proto");

    // Byte fields as `Bytes` (zero-copy decode).
    let config = || {
        let mut c = prost_build::Config::new();
        c.protoc_executable(&protoc).bytes(["."]);
        c
    };

    // Go2NetSpectra's package `v1`; its QueryService takes NetSpectra's
    // messages.
    let mut go = config();
    go.extern_path(".netspectra.v1", "crate::netspectra::v1")
        .file_descriptor_set_path(out.join("go2netspectra_descriptor.bin"));
    compile(
        go,
        &[
            "proto/go2netspectra/v1/traffic.proto",
            "proto/go2netspectra/v1/query.proto",
            "proto/go2netspectra/v1/ai.proto",
        ],
        &includes,
    );

    // NetSpectra's own package reuses Go2NetSpectra's FiveTuple.
    let mut ns = config();
    ns.extern_path(".v1", "crate::go2netspectra::v1")
        .file_descriptor_set_path(out.join("netspectra_descriptor.bin"));
    compile(
        ns,
        &[
            "proto/netspectra/v1/packets.proto",
            "proto/netspectra/v1/query.proto",
            "proto/netspectra/v1/analyst.proto",
        ],
        &includes,
    );
}

/// Generates the messages of `protos` (and, with `grpc`, their services).
fn compile(config: prost_build::Config, protos: &[&str], includes: &[&Path]) {
    let protos: Vec<&Path> = protos.iter().map(Path::new).collect();
    #[cfg(feature = "grpc")]
    let done = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &protos, includes);
    #[cfg(not(feature = "grpc"))]
    let done = { config }.compile_protos(&protos, includes);
    if let Err(e) = done {
        panic!("compile {protos:?}: {e}");
    }
}
