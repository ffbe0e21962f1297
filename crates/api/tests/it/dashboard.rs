//! The built-in dashboard in a real browser: `tests/web/dashboard.mjs`
//! drives Debian's headless Chromium (through playwright-core) against two
//! APIs over a store filled from a generated capture (one open, one with a
//! token), and compares what the pages show with the truth computed here
//! from the decoded packets. Screenshots of every view land in
//! `target/tmp/dashboard/`.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/web/node_modules`
//! (`scripts/test.sh` installs all three).

use crate::fixture::{Data, Sums, WINDOW_NS};
use crate::suite::Api;
use netspectra_model::ip;
use netspectra_store::read::Reader;
use netspectra_store::StoreUrl;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "dashboard-test-token";

/// Per-source truth as `{ip: [packets, bytes]}`.
fn sources(m: &BTreeMap<[u8; 16], Sums>) -> Value {
    let o: Map<String, Value> = m
        .iter()
        .map(|(k, s)| (ip::to_string(k), json!([s.packets, s.bytes])))
        .collect();
    Value::Object(o)
}

fn rfc3339(ns: u64) -> String {
    netspectra_model::time::format_rfc3339_ns(ns)
}

/// What the pages must show, computed from the packets.
fn truth(data: &Data) -> Value {
    let t0 = data.t0();
    let (from, to) = (t0 + WINDOW_NS, t0 + 3 * WINDOW_NS);
    let all = Data::by_source(data.records.iter());
    let sub = Data::by_source(data.in_range(from, to));
    let top = all
        .iter()
        .max_by_key(|(_, s)| s.packets)
        .map(|(k, s)| (ip::to_string(k), s.packets, s.bytes))
        .unwrap();
    let mut spread: Vec<(String, usize)> = data.spread().into_iter().collect();
    spread.sort_by_key(|b| std::cmp::Reverse(b.1));
    json!({
        "task": "per_src_ip",
        "hh_task": "per_src_ip_hh",
        "spread_task": "per_src_ip_spread",
        "trace_task": "per_flow",
        "all": sources(&all),
        "windows": Data::series(data.records.iter()).len(),
        "records": data.records.len(),
        "from": rfc3339(from),
        "to": rfc3339(to),
        "sub": sources(&sub),
        "sub_windows": Data::series(data.in_range(from, to)).len(),
        "trace": {"src_ip": top.0, "packets": top.1, "bytes": top.2},
        "top_spreader": spread[0].0,
        "token": TOKEN,
        // `Data::alerts`: one instance resolved, one still firing.
        "alerts": {"firing": 1, "resolved": 1},
    })
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("`node` is not installed (apt-get install nodejs npm)".into());
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is missing (apt-get install chromium)".into());
    }
    if !web_dir().join("node_modules/playwright-core").exists() {
        return Some(format!(
            "playwright-core is not installed (cd {} && npm ci)",
            web_dir().display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_truth_in_a_real_browser() {
    if let Some(why) = missing_tools() {
        panic!(
            "the dashboard test needs a browser: {why}; scripts/test.sh installs what is missing"
        );
    }
    let data = Data::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = netspectra_store::SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    store.record_alerts(&data.alerts(), None).unwrap();
    drop(store);
    let open = Api::start(Reader::open(&StoreUrl::Sqlite(path.clone())).unwrap(), None).await;
    let guarded = Api::start(
        Reader::open(&StoreUrl::Sqlite(path.clone())).unwrap(),
        Some(TOKEN),
    )
    .await;

    let truth_path = dir.path().join("truth.json");
    std::fs::write(&truth_path, truth(&data).to_string()).unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = dir.path().join("chromium-profile");

    let mut cmd = Command::new("node");
    cmd.arg(web_dir().join("dashboard.mjs"))
        .current_dir(web_dir())
        .env("NS_BASE", &open.base)
        .env("NS_TOKEN_BASE", &guarded.base)
        .env("NS_TRUTH", &truth_path)
        .env("NS_SHOTS", &shots)
        .env("NS_PROFILE", &profile);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
    for view in [
        "overview",
        "top",
        "top-range",
        "sketches",
        "spreaders",
        "trace",
        "alerts",
        "login",
    ] {
        let shot = shots.join(format!("{view}.png"));
        assert!(
            std::fs::metadata(&shot)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "no screenshot {}",
            shot.display()
        );
    }
    open.stop().await;
    guarded.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_and_assets_are_served_from_the_binary() {
    let data = Data::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = netspectra_store::SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    let api = Api::start(Reader::open(&StoreUrl::Sqlite(path)).unwrap(), Some(TOKEN)).await;
    let http = reqwest::Client::new();
    // The page and its assets need no token; the data does.
    let page = http.get(format!("{}/", api.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>NetSpectra</title>"));
    for name in netspectra_api::web::asset_names() {
        let r = http
            .get(format!("{}/assets/{name}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert!(!r.bytes().await.unwrap().is_empty(), "{name}");
    }
    let (status, _) = api.get_as("/assets/nope.js", None).await;
    assert_eq!(status, 404);
    let (status, config) = api.get_as("/ui/config.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(config["token_required"], true, "{config}");
    assert_eq!(config["analyst"], false, "{config}");
    let (status, _) = api.get_as("/api/v1/tasks", None).await;
    assert_eq!(status, 401);
    api.stop().await;
}

/// The ten largest packet counts per source, in order.
fn top_counts<'a>(recs: impl Iterator<Item = &'a netspectra_model::PacketRecord>) -> Vec<u64> {
    let mut v: Vec<u64> = Data::by_source(recs).values().map(|s| s.packets).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.truncate(10);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refreshes_itself_while_a_run_writes() {
    if let Some(why) = missing_tools() {
        panic!(
            "the dashboard test needs a browser: {why}; scripts/test.sh installs what is missing"
        );
    }
    let data = Data::generate();
    let half = data.records.len() / 2;
    let first = Data {
        records: data.records[..half].to_vec(),
    };
    let second = Data {
        records: data.records[half..].to_vec(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = netspectra_store::SqliteStore::open(&path).unwrap();
    let open_runs = first.write_open(&mut store);
    let api = Api::start(Reader::open(&StoreUrl::Sqlite(path.clone())).unwrap(), None).await;
    let truth = json!({
        "before": top_counts(first.records.iter()),
        "after": top_counts(data.records.iter()),
    });
    assert_ne!(truth["before"], truth["after"]);
    let truth_path = dir.path().join("truth.json");
    std::fs::write(&truth_path, truth.to_string()).unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(web_dir().join("live.mjs"))
        .current_dir(web_dir())
        .env("NS_BASE", &api.base)
        .env("NS_TRUTH", &truth_path)
        .env("NS_SHOTS", &shots)
        .env("NS_PROFILE", dir.path().join("chromium-profile"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let (status, transcript) = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut child = cmd.spawn().expect("node runs");
        let mut stdin = child.stdin.take().unwrap();
        let mut transcript = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            transcript.push_str(&line);
            transcript.push('\n');
            if line == "READY" {
                // The rest of the traffic arrives, then the runs end.
                second.write(&mut store);
                for run in &open_runs {
                    store
                        .finish_run(*run, "complete", &json!(["gen"]), 0, 0, &json!({}))
                        .unwrap();
                }
                let _ = writeln!(stdin, "WRITTEN");
            }
        }
        (child.wait().unwrap(), transcript)
    })
    .await
    .unwrap();
    println!("{transcript}");
    assert!(status.success(), "the live checks failed:\n{transcript}");
    assert!(
        transcript.contains("READY") && transcript.contains("0 failed"),
        "{transcript}"
    );
    api.stop().await;
}
