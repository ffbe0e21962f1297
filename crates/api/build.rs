//! Generates the query API's gRPC server, client and messages from the
//! contract in `crates/proto/proto/netspectra/v1/query.proto`, and
//! Go2NetSpectra's `v1.QueryService` over the same messages
//! (`go2netspectra/v1/query.proto`), with the vendored protoc, plus the
//! descriptor sets the reflection service serves.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let proto_dir = PathBuf::from("../proto/proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    let wkt = protoc_bin_vendored::include_path().expect("vendored protoc include path");
    println!("cargo:rerun-if-changed=../proto/proto/netspectra/v1/query.proto");
    println!("cargo:rerun-if-changed=../proto/proto/go2netspectra/v1/query.proto");
    // First: it writes an empty `netspectra.v1.rs` (the messages are
    // extern), which the full generation below then replaces.
    let mut g2 = tonic_prost_build::Config::new();
    g2.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    tonic_prost_build::configure()
        .extern_path(".netspectra.v1", "crate::pb")
        .file_descriptor_set_path(out.join("go2netspectra_descriptor.bin"))
        .compile_with_config(
            g2,
            &[proto_dir.join("go2netspectra/v1/query.proto")],
            &[proto_dir.clone(), wkt.clone()],
        )
        .expect("compile go2netspectra query.proto");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("query_descriptor.bin"))
        .compile_with_config(
            config,
            &[proto_dir.join("netspectra/v1/query.proto")],
            &[proto_dir, wkt],
        )
        .expect("compile query.proto");
}
