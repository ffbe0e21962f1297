//! `netspectra ai` as a process: over a store `analyze` wrote, it becomes
//! ready (`/readyz` on `--metrics`), answers the reference's `AIService`
//! and our `AnalystService` over gRPC with the generator's top source,
//! refuses a caller without the token, and stops cleanly on SIGTERM. A
//! non-loopback listener without a token is refused before it starts.

use netspectra_api::go2netspectra::ai_service_client::AiServiceClient;
use netspectra_api::go2netspectra::AnalyzeTrafficRequest;
use netspectra_api::pb;
use netspectra_api::pb::analyst_service_client::AnalystServiceClient;
use netspectra_testkit::free_port;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The gateway process, killed when dropped.
struct Gateway(Option<Child>);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Gateway {
    /// SIGTERM (the graceful stop), then the exit status and output.
    fn terminate(mut self) -> Output {
        let child = self.0.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait_with_output().unwrap()
    }

    /// Polls `http://metrics/readyz` until 200; panics with the stderr if
    /// the process exits or 30 s pass.
    fn wait_ready(&mut self, metrics: &str) {
        let url = format!("http://{metrics}/readyz");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.0.as_mut().unwrap().try_wait().unwrap() {
                let out = self.0.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "netspectra ai exited ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if client
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} not ready within 30 s");
    }
}

fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[test]
fn the_ai_role_serves_the_offline_analyst_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (file, truth) = super::gen(dir.path(), "ai.pcap", 4_000, 5, "pcap", &[]);
    let url = format!("sqlite:{}", dir.path().join("ns.db").display());
    let (code, _) = super::analyze_json(&[file.to_str().unwrap(), "--store", &url]);
    assert_eq!(code, 0);
    let mut sources: Vec<(String, u64)> = truth["per_src"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(ip, s)| (ip.clone(), s["bytes"].as_u64().unwrap()))
        .collect();
    sources.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
    assert!(sources[0].1 > sources[1].1, "a clear top source");
    let top = sources[0].0.clone();

    let grpc = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = super::bin()
        .args(["ai", "--store", &url, "--grpc", &grpc, "--token", "s3cret"])
        .args(["--metrics", &metrics])
        .env_remove("NETSPECTRA_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netspectra ai");
    let mut gateway = Gateway(Some(child));
    gateway.wait_ready(&metrics);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = format!("http://{grpc}");
        let mut ai = AiServiceClient::connect(endpoint.clone()).await.unwrap();
        let refused = ai
            .analyze_traffic(req(
                AnalyzeTrafficRequest {
                    text_input: "x".into(),
                },
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let text = ai
            .analyze_traffic(req(
                AnalyzeTrafficRequest {
                    text_input: "<h3>Alert: Total_Traffic_Spike</h3>".into(),
                },
                Some("s3cret"),
            ))
            .await
            .unwrap()
            .into_inner()
            .text_output;
        assert!(text.contains(&top), "{top} missing from {text}");

        let mut analyst = AnalystServiceClient::connect(endpoint).await.unwrap();
        let mut stream = analyst
            .ask(req(
                pb::AskRequest {
                    question: "top talkers by bytes?".into(),
                },
                Some("s3cret"),
            ))
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        let mut calls = 0;
        while let Some(e) = stream.message().await.unwrap() {
            if let Some(pb::ask_event::Event::ToolCall(_)) = &e.event {
                calls += 1;
            }
            last = e.event;
        }
        let Some(pb::ask_event::Event::Done(done)) = last else {
            panic!("no done: {last:?}");
        };
        assert!(calls > 0);
        assert_eq!(done.tool_calls.len(), calls);
        assert!(done.answer.contains(&top), "{}", done.answer);
    });

    let out = gateway.terminate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("AI analyst (offline) on gRPC"), "{stderr}");
}

#[test]
fn a_network_listener_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ns.db").display());
    let out = super::bin()
        .args([
            "ai",
            "--store",
            &url,
            "--grpc",
            &format!(":{}", free_port()),
        ])
        .env_remove("NETSPECTRA_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without a token") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}
