//! `netspectra ask`: the offline analyst on a generated capture with a
//! planted scanner (checked against the generator's truth), an answer
//! streamed to the terminal as a real local OpenAI-protocol server writes
//! it, and the same question through a running API.

use netspectra_testkit::openai::{finish, text_chunk, Gate, OpenAiServer, Reply, Step};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// A capture with a planted scanner (2 000 destinations; the generator
/// also plants one of 400) analysed into
/// a SQLite store: the store's URL and the scanner's address.
fn scanned_store(dir: &Path) -> (String, String) {
    let (file, truth) = super::gen(dir, "s.pcap", 40_000, 5, "pcap", &["--spreaders", "2000"]);
    let scanner = truth["super_spreaders"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["distinct_dst"].as_u64())
        .map(|s| s["src"].as_str().unwrap().to_string())
        .unwrap();
    let store = format!("sqlite:{}", dir.join("s.db").display());
    let o = super::run(&["analyze", file.to_str().unwrap(), "--store", &store]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (store, scanner)
}

#[test]
fn the_offline_analyst_names_the_planted_scanner() {
    let dir = tempfile::tempdir().unwrap();
    let (store, scanner) = scanned_store(dir.path());
    let o = super::run(&[
        "ask",
        "who",
        "is",
        "scanning?",
        "--store",
        &store,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    let answer = out["answer"].as_str().unwrap();
    assert!(
        answer.contains(&format!("**{scanner}** reached ")),
        "{scanner}: {answer}"
    );
    assert!(answer.contains("typical of a scan"), "{answer}");
    let calls = out["tool_calls"].as_array().unwrap();
    assert!(
        calls.iter().any(
            |c| c["name"] == "super_spreaders" && c["arguments"]["task"] == "per_src_ip_spread"
        ),
        "{calls:?}"
    );
    assert_eq!(
        out.as_object().unwrap().len(),
        2,
        "answer and tool_calls only"
    );

    // A missing store is a clear error, not an empty answer.
    let o = super::run(&[
        "ask",
        "x",
        "--store",
        &format!("sqlite:{}", dir.path().join("none.db").display()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("analyse a capture first"));
}

#[test]
fn ask_prints_the_first_piece_before_the_model_sent_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = scanned_store(dir.path());
    let gate = Gate::default();
    let server = OpenAiServer::start(vec![Reply::Stream(vec![
        text_chunk("FIRST-PIECE "),
        Step::Wait(gate.clone()),
        text_chunk("LAST-PIECE"),
        finish("stop"),
    ])]);
    let config = dir.path().join("ai.yaml");
    std::fs::write(
        &config,
        format!(
            "ai:\n  base_url: {}\n  model: test-model\n  tools: false\n",
            server.base_url()
        ),
    )
    .unwrap();
    let mut child = super::bin()
        .args([
            "ask",
            "summarise",
            "--store",
            &store,
            "--config",
            config.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        let mut told = false;
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                return String::from_utf8(seen).unwrap();
            }
            seen.extend_from_slice(&buf[..n]);
            if !told && String::from_utf8_lossy(&seen).contains("FIRST-PIECE") {
                told = true;
                let _ = seen_tx.send(());
            }
        }
    });
    // The model holds its last piece until the first one is on screen:
    // a CLI that waited for the whole answer would never print it.
    seen_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first piece printed while the model held the rest");
    gate.open();
    let status = child.wait().unwrap();
    let printed = reader.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(printed, "FIRST-PIECE LAST-PIECE\n");
    // Without tools the prompt carried the store's context.
    let system = server.received()[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(system.contains("super_spreaders"), "{system}");
}

#[test]
fn ask_through_a_running_api_streams_the_servers_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, scanner) = scanned_store(dir.path());
    let mut api = super::query::Server::start(&["api", "--store", &store]);
    api.wait_for("/readyz");
    let o = super::run(&["ask", "who scans?", "--api", &api.base, "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        out["answer"].as_str().unwrap().contains(&scanner),
        "{scanner}: {out}"
    );
    let o = super::run(&["ask", "x", "--api", &api.base, "--store", &store]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "--api and --store exclude each other"
    );
}
