//! The built-in dashboard in a real browser: `tests/web/dashboard.mjs`
//! drives Debian's headless Chromium (through playwright-core) against two
//! APIs over a store filled from a generated capture (one open, one with a
//! token), and compares what the pages show with the truth computed here
//! from the decoded packets; `tests/web/ask.mjs` checks the Ask view
//! against a scripted analyst. Screenshots of every view land in
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

/// A scripted analyst for the Ask view: a tool call and the first piece
/// of the answer, then it waits until the browser has shown that piece
/// (the test lets it go on, one answer per permit of `gate`), then the
/// rest, one piece at a time, and `done`. A question containing "fail"
/// ends in an error after its first piece instead.
struct Scripted {
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    questions: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Answers whose client went away while they waited (the Stop button).
    abandoned: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The scripted answer, piece by piece; the second piece is hostile HTML.
const PIECES: [&str; 4] = [
    "## Top talker\n\n**10.0.0.1** sent ",
    "`612 MB` <img src=x onerror=alert(1)>",
    " in the last hour:\n\n- mostly to 10.0.0.9\n",
    "- over TCP port 443\n",
];

impl netspectra_api::analyst::Analyst for Scripted {
    fn ask(
        &self,
        question: String,
    ) -> tokio::sync::mpsc::Receiver<netspectra_api::analyst::AskEvent> {
        use netspectra_api::analyst::{AskEvent, ToolCall};
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.questions.lock().unwrap().push(question.clone());
        let (gate, abandoned) = (self.gate.clone(), self.abandoned.clone());
        tokio::spawn(async move {
            let call = ToolCall {
                name: "top".into(),
                arguments: json!({"task": "per_src_ip", "by": "bytes", "limit": 5}),
            };
            let _ = tx.send(AskEvent::ToolCall(call.clone())).await;
            let _ = tx.send(AskEvent::Delta(PIECES[0].into())).await;
            if question.contains("fail") {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let _ = tx
                    .send(AskEvent::Failed("the model server timed out".into()))
                    .await;
                return;
            }
            tokio::select! {
                permit = gate.acquire() => permit.unwrap().forget(),
                _ = tx.closed() => {
                    abandoned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                    let _ = tx.send(AskEvent::Failed("the browser never showed the first piece".into())).await;
                    return;
                }
            }
            for piece in &PIECES[1..] {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                let _ = tx.send(AskEvent::Delta((*piece).into())).await;
            }
            let _ = tx
                .send(AskEvent::Done {
                    answer: PIECES.concat(),
                    tool_calls: vec![call],
                })
                .await;
        });
        rx
    }

    fn analyse_alerts(
        &self,
        _alerts: Vec<netspectra_model::alert::AlertRecord>,
    ) -> netspectra_api::analyst::BoxFuture<Result<String, String>> {
        Box::pin(async { Err("not asked in this test".to_string()) })
    }

    fn model(&self) -> Option<String> {
        Some("scripted".into())
    }
}

/// The Ask view in a real browser (`tests/web/ask.mjs`), against an API
/// with a token and the scripted analyst: offered because the server has
/// an analyst, the question and token reach it, the answer streams (the
/// first piece is on screen before the analyst may go on), tool calls are
/// listed, the model's HTML stays text, errors show, Stop ends the answer
/// on the server too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ask_view_streams_the_analysts_answer_in_a_real_browser() {
    use std::sync::atomic::Ordering;
    if let Some(why) = missing_tools() {
        panic!(
            "the dashboard test needs a browser: {why}; scripts/test.sh installs what is missing"
        );
    }
    let data = Data::small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns.db");
    let mut store = netspectra_store::SqliteStore::open(&path).unwrap();
    data.write(&mut store);
    drop(store);
    let analyst = Scripted {
        gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        questions: Default::default(),
        abandoned: Default::default(),
    };
    let (gate, questions, abandoned) = (
        analyst.gate.clone(),
        analyst.questions.clone(),
        analyst.abandoned.clone(),
    );
    let api = Api::start_with(
        Reader::open(&StoreUrl::Sqlite(path)).unwrap(),
        netspectra_api::ServeOptions {
            token: Some(TOKEN.into()),
            analyst: Some(std::sync::Arc::new(analyst)),
            ..Default::default()
        },
    )
    .await;
    let (status, config) = api.get_as("/ui/config.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(config["analyst"], true, "{config}");

    let truth = json!({
        "token": TOKEN,
        "pieces": PIECES,
        "call": "top(task=per_src_ip, by=bytes, limit=5)",
        "failure": "the model server timed out",
    });
    let truth_path = dir.path().join("truth.json");
    std::fs::write(&truth_path, truth.to_string()).unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(web_dir().join("ask.mjs"))
        .current_dir(web_dir())
        .env("NS_BASE", &api.base)
        .env("NS_TRUTH", &truth_path)
        .env("NS_SHOTS", &shots)
        .env("NS_PROFILE", dir.path().join("chromium-profile"))
        .stdout(std::process::Stdio::piped());
    let gate_for_node = gate.clone();
    let (status, transcript) = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let mut child = cmd.spawn().expect("node runs");
        let mut transcript = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            transcript.push_str(&line);
            transcript.push('\n');
            // The browser shows the first piece: the answer may go on.
            if line == "FIRST_PIECE_SHOWN" {
                gate_for_node.add_permits(1);
            }
        }
        (child.wait().unwrap(), transcript)
    })
    .await
    .unwrap();
    println!("{transcript}");
    assert!(status.success(), "the Ask checks failed:\n{transcript}");
    assert!(
        transcript.contains("FIRST_PIECE_SHOWN") && transcript.contains("0 failed"),
        "{transcript}"
    );
    assert_eq!(
        questions.lock().unwrap().as_slice(),
        [
            "Who sent the most bytes?",
            "Please fail",
            "A question to stop"
        ],
        "the questions reached the analyst as typed"
    );
    // The stopped answer was abandoned on the server, not left running.
    let waited = std::time::Instant::now();
    while abandoned.load(Ordering::SeqCst) == 0 && waited.elapsed().as_secs() < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        abandoned.load(Ordering::SeqCst),
        1,
        "Stop closed the stream"
    );
    assert!(
        std::fs::metadata(shots.join("ask.png")).is_ok_and(|m| m.len() > 1000),
        "no screenshot of the Ask view"
    );
    api.stop().await;
}
