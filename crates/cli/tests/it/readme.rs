//! README.md's examples run as written. Every fenced `sh` block is run, in
//! order, by `bash -euo pipefail` in one scratch directory (holding a link
//! to the repository's `data/`, so `data/demo.pcapng` is the bundled
//! capture), with the `netspectra` under test first on `PATH`; a block is
//! skipped only when the line right before its fence is an HTML comment
//! `<!-- no-test: reason -->` (servers that run until Ctrl-C, root, long
//! runs). A block that asks the query API (`netspectra query`) gets one:
//! the `netspectra api` the README starts in the block before, here on a
//! free port (`NETSPECTRA_API`), over the scratch directory's
//! `netspectra.db`, with the README's token `s3cret`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fenced block: its language, its text, and the line of its fence.
struct Block {
    lang: String,
    text: String,
    line: usize,
    skip: Option<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(lang) = lines[i].strip_prefix("```") {
            let start = i;
            let mut text = String::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                text.push_str(lines[i]);
                text.push('\n');
                i += 1;
            }
            let skip = start
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .and_then(|l| l.strip_prefix("<!-- no-test:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|r| r.trim().to_string());
            out.push(Block {
                lang: lang.trim().to_string(),
                text,
                line: start + 1,
                skip,
            });
        }
        i += 1;
    }
    out
}

/// `netspectra api` for the query blocks, killed when dropped.
struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_api(dir: &Path, bin_dir: &Path) -> (Api, String) {
    let addr = format!("127.0.0.1:{}", netspectra_testkit::free_port());
    let child = Command::new(bin_dir.join("netspectra"))
        .args(["api", "--store", "sqlite:netspectra.db", "--grpc", "off"])
        .args(["--http", &addr, "--token", "s3cret"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start netspectra api");
    let api = Api(child);
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("{base}/healthz"))
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < deadline, "netspectra api did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (api, base)
}

#[test]
fn every_shell_block_of_the_readme_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The repository's read-only parts that examples name: the bundled
    // capture and the deployment files.
    for part in ["data", "deploy"] {
        std::os::unix::fs::symlink(
            repo.join(part).canonicalize().unwrap(),
            dir.path().join(part),
        )
        .unwrap();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_netspectra"));
    let bin_dir = bin.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut api: Option<(Api, String)> = None;
    let mut ran = 0;
    for block in blocks(&readme) {
        if !matches!(block.lang.as_str(), "sh" | "bash" | "shell" | "console") {
            continue;
        }
        if let Some(reason) = &block.skip {
            assert!(
                !reason.is_empty(),
                "README.md:{}: say why the block is not tested",
                block.line
            );
            continue;
        }
        if block.text.contains("netspectra query") && api.is_none() {
            api = Some(start_api(dir.path(), bin_dir));
        }
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &block.text])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("NETSPECTRA_API_TOKEN")
            .env_remove("NETSPECTRA_API")
            .env("NO_COLOR", "1");
        if let Some((_, base)) = &api {
            cmd.env("NETSPECTRA_API", base);
        }
        let out = cmd.output().expect("run bash");
        assert!(
            out.status.success(),
            "README.md:{}: the block failed ({}):\n{}\nstdout:\n{}\nstderr:\n{}",
            block.line,
            out.status,
            block.text,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 3, "only {ran} README blocks ran");
}

#[test]
fn blocks_and_their_no_test_marks_are_found() {
    let text = "a\n```sh\necho 1\n```\n<!-- no-test: needs root -->\n```sh\nsudo x\n```\n```json\n{}\n```\n";
    let b = blocks(text);
    assert_eq!(b.len(), 3);
    assert_eq!(
        (b[0].lang.as_str(), b[0].text.as_str(), b[0].skip.as_deref()),
        ("sh", "echo 1\n", None)
    );
    assert_eq!(b[1].skip.as_deref(), Some("needs root"));
    assert_eq!(b[2].lang, "json");
}
