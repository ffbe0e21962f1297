//! Generates the query API's gRPC server, client and messages from the
//! contract in `crates/proto/proto/netspectra/v1/query.proto`, with the
//! vendored protoc, plus the descriptor set the reflection service serves.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let proto_dir = PathBuf::from("../proto/proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    let wkt = protoc_bin_vendored::include_path().expect("vendored protoc include path");
    println!("cargo:rerun-if-changed=../proto/proto/netspectra/v1/query.proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("query_descriptor.bin"))
        .compile_with_config(
            config,
            &[proto_dir.join("netspectra/v1/query.proto")],
            &[proto_dir, wkt],
        )
        .expect("compile query.proto");
}
