//! Generates the protobuf types with prost-build and the vendored protoc
//! (no system protoc needed).

use std::path::Path;

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    let include = protoc_bin_vendored::include_path().expect("vendored protoc include path");
    let includes = [Path::new("proto"), include.as_path()];
    println!("cargo:rerun-if-changed=proto");

    // Go2NetSpectra's package `v1`; byte fields as `Bytes` (zero-copy decode).
    let mut go = prost_build::Config::new();
    go.protoc_executable(&protoc).bytes(["."]);
    go.compile_protos(&["proto/go2netspectra/v1/traffic.proto"], &includes)
        .expect("compile go2netspectra protos");

    // NetSpectra's own package reuses Go2NetSpectra's FiveTuple.
    let mut ns = prost_build::Config::new();
    ns.protoc_executable(&protoc)
        .bytes(["."])
        .extern_path(".v1", "crate::go2netspectra::v1");
    ns.compile_protos(&["proto/netspectra/v1/packets.proto"], &includes)
        .expect("compile netspectra protos");
}
