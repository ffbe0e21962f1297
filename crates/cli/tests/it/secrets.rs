//! Passwords in URLs never reach stderr or the logs (#16 finding 1): each
//! role is started with a password in every kind of URL it takes, made to
//! fail or log where the URL is quoted, and its whole output is searched.

use std::process::Output;

const SECRET: &str = "hunter2-Zq9";

fn assert_hidden(what: &str, out: &Output, expect_user: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains(SECRET) && !stdout.contains(SECRET),
        "{what}: the password leaked:\n{stderr}\n{stdout}"
    );
    assert!(
        stderr.contains(&format!("{expect_user}:***@")),
        "{what}: the message should still say where (user, host):\n{stderr}"
    );
}

#[test]
fn no_password_in_any_url_reaches_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = super::gen(dir.path(), "s.pcap", 200, 1, "pcap", &[]);
    let file = file.to_str().unwrap();
    // Nothing listens on port 1 of loopback.
    let nats = format!("nats://alice:{SECRET}@127.0.0.1:1");
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "probe, NATS connect error",
            vec![
                "probe".into(),
                "--nats".into(),
                nats.clone(),
                "--file".into(),
                file.into(),
            ],
            "alice",
        ),
        (
            "engine, NATS connect error",
            vec![
                "engine".into(),
                "--no-store".into(),
                "--nats".into(),
                nats.clone(),
            ],
            "alice",
        ),
        (
            "analyze, a store URL that does not parse",
            vec![
                "analyze".into(),
                file.into(),
                "--store".into(),
                format!("clickhouse://bob:{SECRET}@127.0.0.1/no_port"),
            ],
            "bob",
        ),
        (
            "api, a store URL of an unknown scheme",
            vec![
                "api".into(),
                "--store".into(),
                format!("mysql://bob:{SECRET}@127.0.0.1:3306/db"),
            ],
            "bob",
        ),
        (
            "query, the API cannot be reached",
            vec![
                "query".into(),
                "tasks".into(),
                "--api".into(),
                format!("http://carol:{SECRET}@127.0.0.1:1"),
            ],
            "carol",
        ),
    ];
    for (what, args, user) in cases {
        let out = super::bin()
            .args(&args)
            .env("NETSPECTRA_LOG", "debug")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: should fail");
        assert_hidden(what, &out, user);
    }
}

/// A probe and an engine given a NATS URL with a password: the password is
/// in none of their output, nor in the run the engine stores (whose
/// `inputs` and `command` the API's `runs` serves).
#[test]
fn a_nats_password_is_neither_printed_nor_stored() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::Duration;

    let server = netspectra_testkit::nats::NatsServer::start(false);
    let url = server
        .url()
        .replacen("nats://", &format!("nats://alice:{SECRET}@"), 1);
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = super::gen(dir.path(), "s.pcap", 300, 4, "pcap", &[]);
    let db = dir.path().join("e.db");
    let mut engine = super::bin()
        .args(["engine", "--nats", &url, "--store"])
        .arg(format!("sqlite:{}", db.display()))
        .args(["--workers", "1", "--format", "json", "--idle-exit", "3"])
        .args(["--engines", "1", "--engine-index", "0"])
        .env("NETSPECTRA_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = engine.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut all = String::new();
        let mut ready = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("consuming shards") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("engine subscribed within 20 s");
    let probe = super::bin()
        .args(["probe", "--file", file.to_str().unwrap(), "--nats", &url])
        .args(["--format", "json"])
        .env("NETSPECTRA_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_hidden("probe", &probe, "alice");
    let status = engine.wait().unwrap();
    let mut stdout = String::new();
    engine
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let stderr = lines.join().unwrap();
    assert!(status.success(), "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(SECRET),
            "engine output leaked the password:\n{text}"
        );
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (inputs, command): (String, String) = conn
        .query_row("SELECT inputs, command FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        !inputs.contains(SECRET) && !command.contains(SECRET),
        "{inputs} {command}"
    );
    assert!(inputs.contains("alice:***@"), "{inputs}");
}
