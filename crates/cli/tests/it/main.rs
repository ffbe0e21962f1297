//! End-to-end tests of the `netspectra` binary against the generator's truth,
//! which is computed from the generator's own choices, never by decoding.

mod ai;
mod alert;
mod ask;
mod bench;
mod distributed;
mod docs;
mod metrics;
mod prometheus;
mod query;
mod readme;
mod secrets;
mod sketch;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netspectra"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run netspectra")
}

pub(crate) fn gen(
    dir: &Path,
    name: &str,
    packets: u64,
    seed: u64,
    format: &str,
    extra: &[&str],
) -> (PathBuf, Value) {
    let out = dir.join(name);
    let (packets, seed) = (packets.to_string(), seed.to_string());
    let mut args = vec![
        "gen",
        out.to_str().unwrap(),
        "--packets",
        &packets,
        "--seed",
        &seed,
        "--format",
        format,
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(
        o.status.success(),
        "gen failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let truth_file = format!("{}.truth.json", out.display());
    let truth = serde_json::from_slice(&std::fs::read(truth_file).unwrap()).unwrap();
    (out, truth)
}

pub(crate) fn analyze_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["analyze", "--format", "json"];
    all.extend_from_slice(args);
    let o = run(&all);
    let code = o.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (code, v)
}

pub(crate) fn task<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("task {name} missing"))
}

/// Compares per-source rows with the truth, exactly.
fn assert_matches_truth(report: &Value, truth: &Value) {
    assert_eq!(report["packets"], truth["packets"]);
    assert_eq!(report["bytes"], truth["bytes"]);
    assert_eq!(report["decoded"]["non_ip"], truth["non_ip_packets"]);
    assert_eq!(report["decoded"]["ipv4"], truth["ipv4_packets"]);
    assert_eq!(report["decoded"]["ipv6"], truth["ipv6_packets"]);
    assert_eq!(report["decoded"]["malformed"], 0);
    let per_src = task(report, "per_src_ip");
    let expect = truth["per_src"].as_object().unwrap();
    let rows = per_src["rows"].as_array().unwrap();
    assert_eq!(rows.len(), expect.len(), "number of sources");
    for row in rows {
        let src = row["key"]["SrcIP"].as_str().unwrap();
        let t = &expect[src];
        assert_eq!(row["packets"], t["packets"], "packets of {src}");
        assert_eq!(row["bytes"], t["bytes"], "bytes of {src}");
    }
    assert_eq!(per_src["packets"], truth["ip_packets"]);
    assert_eq!(per_src["bytes"], truth["ip_bytes"]);
    assert_eq!(task(report, "per_flow")["keys"], truth["distinct_flows"]);
    // Rows are sorted by bytes, descending.
    let bytes: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn analyze_counts_match_the_truth_for_pcap_and_pcapng_and_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    for (format, seed) in [("pcap", 1), ("pcapng", 2)] {
        let (file, truth) = gen(
            dir.path(),
            &format!("t.{format}"),
            40_000,
            seed,
            format,
            &[],
        );
        let mut tasks_by_workers = Vec::new();
        for workers in ["1", "2", "5"] {
            let (code, report) = analyze_json(&[
                file.to_str().unwrap(),
                "--no-store",
                "--top",
                "0",
                "--workers",
                workers,
            ]);
            assert_eq!(code, 0);
            assert_matches_truth(&report, &truth);
            assert_eq!(report["files"][0]["format"], format);
            assert_eq!(report["files"][0]["error"], Value::Null);
            // Sketch memory is per worker; every estimate must be the same.
            let mut tasks = report["tasks"].clone();
            for t in tasks.as_array_mut().unwrap() {
                t.as_object_mut().unwrap().remove("memory_bytes");
            }
            tasks_by_workers.push(tasks);
        }
        assert!(
            tasks_by_workers.windows(2).all(|w| w[0] == w[1]),
            "results must be identical for any worker count"
        );
    }
}

#[test]
fn json_rows_have_the_contract_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = gen(dir.path(), "s.pcap", 5_000, 3, "pcap", &[]);
    let (_, report) = analyze_json(&[file.to_str().unwrap(), "--no-store", "--top", "3"]);
    let flow = task(&report, "per_flow");
    assert_eq!(flow["kind"], "exact");
    assert_eq!(
        flow["key"],
        serde_json::json!(["SrcIP", "DstIP", "SrcPort", "DstPort", "Protocol"])
    );
    let rows = flow["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "--top 3");
    let row = &rows[0];
    assert!(row["key"]["SrcPort"].is_u64() && row["key"]["Protocol"].is_u64());
    assert!(row["key"]["DstIP"].is_string());
    let first = row["first_seen"].as_str().unwrap();
    assert!(
        first.ends_with('Z') && first.len() == "2026-01-01T00:00:00.000000000Z".len(),
        "{first}"
    );
    assert!(report["elapsed_s"].is_f64());
}

/// Counts the complete pcap records in `bytes` (an independent walk of the
/// record headers, little-endian as the generator writes them).
fn complete_pcap_records(bytes: &[u8]) -> (u64, u64) {
    let mut off = 24;
    let (mut n, mut wire) = (0, 0);
    while off + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(bytes[off + 12..off + 16].try_into().unwrap());
        if off + 16 + incl > bytes.len() {
            break;
        }
        off += 16 + incl;
        n += 1;
        wire += u64::from(orig);
    }
    (n, wire)
}

#[test]
fn a_damaged_file_reports_what_was_read_then_the_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = gen(dir.path(), "d.pcap", 3_000, 4, "pcap", &[]);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() * 2 / 3);
    std::fs::write(&file, &bytes).unwrap();
    let (expect_packets, expect_bytes) = complete_pcap_records(&bytes);
    let (code, report) = analyze_json(&[file.to_str().unwrap(), "--no-store"]);
    assert_eq!(code, 2);
    assert_eq!(report["packets"], expect_packets);
    assert_eq!(report["bytes"], expect_bytes);
    let err = report["files"][0]["error"].as_str().unwrap();
    assert!(err.contains("d.pcap") && err.contains("offset"), "{err}");
    // The error is printed once: in the table, not also as a log line.
    let o = run(&["analyze", file.to_str().unwrap(), "--no-store"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("offset"));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!log.contains("offset"), "printed twice: {log}");
}

/// An input that is not a capture, or is missing, is a usage error (exit 1,
/// not "damaged"): every such input is named, nothing is read or stored,
/// and the two cases behave alike; each cause is printed once.
#[test]
fn a_file_that_is_not_a_capture_or_missing_is_a_usage_error_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = gen(dir.path(), "ok.pcap", 2_000, 5, "pcap", &[]);
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a capture\n").unwrap();
    let missing = dir.path().join("missing.pcap");
    let db = dir.path().join("ns.db");
    let store = format!("sqlite:{}", db.display());
    for inputs in [
        vec![text.to_str().unwrap(), file.to_str().unwrap()],
        vec![file.to_str().unwrap(), missing.to_str().unwrap()],
        vec![
            text.to_str().unwrap(),
            file.to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
    ] {
        let mut args = vec!["analyze"];
        args.extend(&inputs);
        args.extend(["--store", &store]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{inputs:?}");
        assert!(o.stdout.is_empty());
        let err = String::from_utf8_lossy(&o.stderr);
        if inputs.contains(&text.to_str().unwrap()) {
            assert!(
                err.contains("notes.txt is not a pcap or pcapng capture"),
                "{err}"
            );
        }
        if inputs.contains(&missing.to_str().unwrap()) {
            assert!(err.contains("missing.pcap does not exist"), "{err}");
        }
        assert!(err.contains("nothing was analyzed"), "{err}");
        assert!(!db.exists(), "nothing stored");
    }
    // An unreadable input: its cause once, not repeated.
    let o = run(&["analyze", dir.path().to_str().unwrap(), "--no-store"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
}

#[test]
fn usage_and_configuration_errors_exit_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["analyze", "/nonexistent/x.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let (file, _) = gen(dir.path(), "c.pcap", 100, 6, "pcap", &[]);
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  exact:\n    tasks:\n      - name: x\n        key: [SrcIP, Port]\n",
    )
    .unwrap();
    let o = run(&[
        "analyze",
        file.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("aggregator.exact.tasks[0].key[1]") && stderr.contains("Port"),
        "{stderr}"
    );
    let o = run(&["analyze", file.to_str().unwrap(), "--format", "xml"]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["analyze", file.to_str().unwrap(), "--store", "mysql://x/y"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scheme"));
}

#[test]
fn runs_are_stored_per_window_and_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = gen(dir.path(), "st.pcapng", 8_000, 7, "pcapng", &[]);
    let db = dir.path().join("ns.db");
    let url = format!("sqlite:{}", db.display());
    for _ in 0..2 {
        // `--append`: the same input twice is otherwise one run (replaced).
        let (code, report) = analyze_json(&[file.to_str().unwrap(), "--store", &url, "--append"]);
        assert_eq!(code, 0);
        assert!(report["store"]["run_id"].is_i64());
        assert_eq!(report["store"]["replaced"], serde_json::json!([]));
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let runs: Vec<(i64, String, i64)> = conn
        .prepare("SELECT run_id, status, packets FROM runs ORDER BY run_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs.len(), 2);
    for (run, status, packets) in runs {
        assert_eq!(status, "complete");
        assert_eq!(Some(packets as u64), truth["packets"].as_u64());
        let (p, b): (i64, i64) = conn
            .query_row(
                "SELECT SUM(packets), SUM(bytes) FROM exact_rows WHERE run_id = ?1 AND task = 'per_src_ip'",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(Some(p as u64), truth["ip_packets"].as_u64());
        assert_eq!(Some(b as u64), truth["ip_bytes"].as_u64());
    }
}

#[test]
fn table_output_shows_totals_and_top_rows_of_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = gen(dir.path(), "tb.pcap", 3_000, 8, "pcap", &[]);
    let o = run(&[
        "analyze",
        file.to_str().unwrap(),
        "--no-store",
        "--top",
        "4",
    ]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let hh = truth["heavy_hitters"][0].as_str().unwrap();
    for needle in [
        "per_src_ip (exact, key SrcIP)",
        "per_dst_ip",
        "per_flow",
        "top 4 by bytes",
        hh,
        "decoded:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    // Count-Min only overestimates: its bound is shown one-sided.
    assert!(
        out.lines()
            .any(|l| l.contains(hh) && l.contains("≤ ") && l.trim_end().ends_with(" over")),
        "{out}"
    );
    assert!(
        !out.contains('±'),
        "no two-sided bound for one-sided estimates:\n{out}"
    );
}
mod run;

/// `gen` never overwrites a file silently, and its truth marks which
/// planted super-spreaders `analyze` reports with the default tasks.
#[test]
fn gen_refuses_to_overwrite_and_marks_the_spreaders_analyze_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = gen(
        dir.path(),
        "g.pcap",
        60_000,
        3,
        "pcap",
        &["--spreaders", "300,1500"],
    );
    let path = file.to_str().unwrap();
    let before = std::fs::read(&file).unwrap();
    let o = run(&["gen", path, "--packets", "10"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the file is unchanged"
    );

    let planted = truth["super_spreaders"].as_array().unwrap();
    let (code, report) = analyze_json(&[path, "--no-store", "--top", "0"]);
    assert_eq!(code, 0);
    let reported: Vec<&str> = task(&report, "per_src_ip_spread")["super_spreaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"]["SrcIP"].as_str().unwrap())
        .collect();
    let mut marks = Vec::new();
    for s in planted {
        let expected = s["reported_by_default"].as_bool().expect("marked");
        assert_eq!(expected, s["distinct_dst"].as_u64().unwrap() >= 1024, "{s}");
        let src = s["src"].as_str().unwrap();
        assert_eq!(
            reported.contains(&src),
            expected,
            "{src}: {s}; reported {reported:?}"
        );
        marks.push(expected);
    }
    assert!(
        marks.contains(&true) && marks.contains(&false),
        "{planted:?}"
    );

    let o = run(&["gen", path, "--packets", "10", "--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(std::fs::read(&file).unwrap(), before);
}

/// Go2NetSpectra's `config.yaml` loads with none of its 17 variables set:
/// one warning per variable (no colour codes when stderr is not a
/// terminal), its ClickHouse writer named as not used; a value the command
/// needs (the store URL) from an unset variable, or a bad `store.url`, is
/// an error naming the key.
#[test]
fn go2netspectra_config_loads_without_its_variables_and_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/data/go2netspectra-config.yaml");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo.pcapng");
    let clean = |cmd: &mut Command| {
        for (k, _) in std::env::vars() {
            if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') && k != "PATH" && k != "HOME" {
                cmd.env_remove(&k);
            }
        }
    };
    let mut cmd = bin();
    clean(&mut cmd);
    let o = cmd
        .args([
            "analyze",
            demo.to_str().unwrap(),
            "--no-store",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI codes when stderr is not a terminal: {err}"
    );
    for var in ["NATS_URL", "SMTP_PORT", "CLICKHOUSE_PASSWORD", "AI_API_KEY"] {
        let needle = format!("environment variable {var} is not set");
        assert_eq!(err.matches(&needle).count(), 1, "{var} once: {err}");
    }
    assert_eq!(err.matches("is not set:").count(), 17, "{err}");
    assert!(
        err.contains("writers[1] (type clickhouse) is not used"),
        "{err}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "store:\n  url: postgres://db/ns\n").unwrap();
    let o = run(&[
        "analyze",
        demo.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("store.url") && err.contains("unknown scheme `postgres`"),
        "{err}"
    );

    let from_env = dir.path().join("env.yaml");
    std::fs::write(&from_env, "store:\n  url: ${NS_TEST_UNSET_STORE}\n").unwrap();
    let mut cmd = bin();
    clean(&mut cmd);
    let o = cmd
        .args([
            "analyze",
            demo.to_str().unwrap(),
            "--config",
            from_env.to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("store.url") && err.contains("NS_TEST_UNSET_STORE"),
        "{err}"
    );
    assert!(
        !dir.path().join("netspectra.db").exists(),
        "no silent default store"
    );
}

/// Untagged frames have no VLAN (JSON null, `-` in the table), apart from
/// tagged ones: per VLAN, the packets add up to the generator's tagged and
/// untagged IP packets exactly.
#[test]
fn untagged_frames_have_no_vlan_rather_than_vlan_0() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = gen(dir.path(), "v.pcap", 20_000, 8, "pcap", &[]);
    let cfg = dir.path().join("vlan.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  types: [exact]\n  exact:\n    tasks:\n      - {name: per_vlan, key: [VLAN]}\n",
    )
    .unwrap();
    let args = [
        file.to_str().unwrap(),
        "--no-store",
        "--top",
        "0",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let (code, report) = analyze_json(&args);
    assert_eq!(code, 0);
    let rows = task(&report, "per_vlan")["rows"]
        .as_array()
        .unwrap()
        .clone();
    let (mut untagged, mut tagged) = (0, 0);
    for r in &rows {
        let p = r["packets"].as_u64().unwrap();
        match &r["key"]["VLAN"] {
            Value::Null => untagged += p,
            Value::Number(_) => tagged += p,
            other => panic!("VLAN {other}"),
        }
    }
    let tagged_truth = truth["vlan_packets"].as_u64().unwrap();
    assert_eq!(tagged, tagged_truth);
    assert_eq!(
        untagged,
        truth["ip_packets"].as_u64().unwrap() - tagged_truth
    );
    let mut table_args = vec!["analyze"];
    table_args.extend(args);
    let o = run(&table_args);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.lines().any(|l| l.trim_start().starts_with("- ")),
        "untagged shown as `-`:\n{table}"
    );
}

/// `SrcNet/24/64` keys IPv4 sources by /24 and IPv6 ones by /64; the
/// networks add up to the generator's per-source truth.
#[test]
fn network_keys_take_a_prefix_per_address_family() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = gen(dir.path(), "n.pcap", 20_000, 9, "pcap", &[]);
    let cfg = dir.path().join("net.yaml");
    std::fs::write(
        &cfg,
        "aggregator:\n  types: [exact]\n  exact:\n    tasks:\n      - {name: nets, key: [SrcNet/24/64]}\n",
    )
    .unwrap();
    let (code, report) = analyze_json(&[
        file.to_str().unwrap(),
        "--no-store",
        "--top",
        "0",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for (src, stats) in truth["per_src"].as_object().unwrap() {
        let net = match src.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(a) => {
                let o = a.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            std::net::IpAddr::V6(a) => {
                let s = a.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        };
        *want.entry(net).or_default() += stats["packets"].as_u64().unwrap();
    }
    let got: std::collections::BTreeMap<String, u64> = task(&report, "nets")["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"]["SrcNet/24/64"].as_str().unwrap().to_string(),
                r["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(want.keys().any(|k| k.ends_with("/64")) && want.keys().any(|k| k.ends_with("/24")));
    assert_eq!(got, want);
}

/// With the ClickHouse server down, `analyze` spools its rows and succeeds:
/// looking for an earlier run of the same input to replace is best effort.
#[test]
fn analyze_into_an_unreachable_clickhouse_spools_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo.pcapng");
    let url = format!(
        "clickhouse://127.0.0.1:{}/ns_down",
        netspectra_testkit::free_port()
    );
    let o = bin()
        .args([
            "analyze",
            demo.to_str().unwrap(),
            "--store",
            &url,
            "--format",
            "json",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["store"]["replaced"], serde_json::json!([]));
    assert!(err.contains("wait in the spool"), "{err}");
    assert!(dir.path().join("netspectra-spool").exists());
}

/// `--workers 0` means one per core, as `num_workers: 0` does.
#[test]
fn workers_0_is_one_per_core_like_the_config() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo.pcapng");
    let (code, report) = analyze_json(&[demo.to_str().unwrap(), "--no-store", "--workers", "0"]);
    assert_eq!(code, 0);
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(report["workers"].as_u64(), Some(cores));
    let o = run(&[
        "analyze",
        demo.to_str().unwrap(),
        "--no-store",
        "--workers",
        "1",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(")
            && String::from_utf8_lossy(&o.stdout).contains(", 1 worker)")
    );
}
