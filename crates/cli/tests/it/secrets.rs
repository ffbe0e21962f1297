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
