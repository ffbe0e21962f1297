//! The repository's own promises about its shape: the crate graph in
//! docs/ARCHITECTURE.md is current and points one way, the docs link
//! nowhere outside the repository, and the binary links no libpcap.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

#[test]
fn the_architecture_crate_graph_is_current_and_one_way() {
    let out = Command::new(repo().join("scripts/crate-graph.sh"))
        .output()
        .expect("run scripts/crate-graph.sh (needs bash, python3, cargo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph = String::from_utf8(out.stdout).unwrap();
    let doc = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    let block =
        format!("<!-- crate-graph:start -->\n```text\n{graph}```\n<!-- crate-graph:end -->");
    assert!(
        doc.contains(&block),
        "docs/ARCHITECTURE.md's crate graph is stale: run scripts/crate-graph.sh --write\n{graph}"
    );
    let deps = |name: &str| -> Vec<String> {
        graph
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_once('→'))
            .map(|(_, d)| d.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(deps("store"), ["model"], "store depends on model only");
    assert!(!deps("api").contains(&"engine".to_string()));
    assert!(!deps("cli").contains(&"sketch".to_string()));
    assert_eq!(deps("capture"), ["model"]);
}

#[test]
fn docs_do_not_link_outside_the_repository() {
    for doc in [
        "README.md",
        "docs/ARCHITECTURE.md",
        "docs/performance-history.md",
    ] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        assert!(
            !text.contains("../shared"),
            "{doc} links to ../shared, which users do not have"
        );
    }
}

#[test]
fn the_binary_does_not_link_libpcap() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_netspectra"))
        .output()
        .expect("run ldd");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{libs}");
    assert!(
        libs.contains("libc.so"),
        "ldd listed nothing useful: {libs}"
    );
    assert!(!libs.contains("pcap"), "the binary links libpcap:\n{libs}");
}
