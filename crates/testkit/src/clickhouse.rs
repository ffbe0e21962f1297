//! A private ClickHouse server for tests.
//!
//! [`ClickHouseServer::start`] writes its own config (root element
//! `<yandex>`, understood by Debian's 18.16 and by current releases) into a
//! temporary directory, starts `clickhouse-server` on two free loopback
//! ports, and waits until `GET /ping` answers `Ok.`. [`ClickHouseServer::stop`]
//! and [`ClickHouseServer::start_again`] simulate an outage on the same data
//! directory and ports; dropping the value kills the server. Only `std`
//! networking and processes: any test, async or not, can use it.
//!
//! The server runs as the current user (root in CI); the binary comes from
//! `apt-get install clickhouse-server clickhouse-client`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer `/ping` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers the test databases so several servers in one test binary never
/// share a name (their data directories differ anyway).
static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

/// A running (or deliberately stopped) private ClickHouse server.
pub struct ClickHouseServer {
    dir: tempfile::TempDir,
    binary: PathBuf,
    http_port: u16,
    tcp_port: u16,
    database: String,
    child: Option<Child>,
}

impl ClickHouseServer {
    /// Starts a fresh server with an empty data directory.
    ///
    /// # Panics
    /// When the binary is missing (naming the packages that install it) or
    /// the server does not answer within 30 s (with its log's tail).
    pub fn start() -> ClickHouseServer {
        let binary = find_binary().unwrap_or_else(|| {
            panic!(
                "clickhouse-server not found: apt-get install clickhouse-server clickhouse-client"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("netspectra-clickhouse-")
            .tempdir()
            .expect("temporary directory for ClickHouse");
        let mut server = ClickHouseServer {
            binary,
            http_port: crate::free_port(),
            tcp_port: crate::free_port(),
            database: format!(
                "netspectra_test_{}",
                NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
            ),
            dir,
            child: None,
        };
        server.write_config();
        server.start_again();
        server
    }

    /// The store URL of this server's test database (created by the store on open).
    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }

    /// The store URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "clickhouse://default@127.0.0.1:{}/{database}",
            self.http_port
        )
    }

    /// The test database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The HTTP port (the store's protocol).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native-protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The server's temporary directory (data, logs, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and waits until
    /// its HTTP port refuses connections: an outage for the tests.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Starts the server again on the same data directory and ports, and
    /// waits until it answers `/ping`.
    ///
    /// # Panics
    /// When it does not answer within 30 s (with its log's tail).
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        let out = std::fs::File::create(self.dir.path().join("stdout.log")).expect("stdout log");
        let err = std::fs::File::create(self.dir.path().join("stderr.log")).expect("stderr log");
        let mut command = Command::new(&self.binary);
        if self.binary.file_name().is_some_and(|n| n == "clickhouse") {
            command.arg("server");
        }
        let child = command
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if ping(self.http_port) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "clickhouse-server exited with {status} before answering /ping on port {}\n{}",
                    self.http_port,
                    self.log_tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "clickhouse-server did not answer /ping on port {} within {START_TIMEOUT:?}\n{}",
                    self.http_port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["server.err.log", "server.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!("--- {name} (last {} lines)\n", tail.len()));
            for l in tail {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn write_config(&self) {
        let d = self.dir.path();
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(d.join(sub)).expect("server directories");
        }
        let p = |s: &str| d.join(s).display().to_string();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{log}</log>
        <errorlog>{errlog}</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{data}/</path>
    <tmp_path>{tmp}/</tmp_path>
    <user_files_path>{user_files}/</user_files_path>
    <format_schema_path>{schemas}/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
    <timezone>UTC</timezone>
</yandex>
"#,
            log = p("server.log"),
            errlog = p("server.err.log"),
            http = self.http_port,
            tcp = self.tcp_port,
            data = p("data"),
            tmp = p("tmp"),
            user_files = p("user_files"),
            schemas = p("format_schemas"),
            users = p("users.xml"),
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;
        std::fs::write(d.join("config.xml"), config).expect("write config.xml");
        std::fs::write(d.join("users.xml"), users).expect("write users.xml");
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `clickhouse-server` (Debian puts it in /usr/sbin), or the single
/// `clickhouse` binary of upstream packages run as `clickhouse server`;
/// `NETSPECTRA_CLICKHOUSE_SERVER` overrides both.
fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETSPECTRA_CLICKHOUSE_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin"].map(PathBuf::from));
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    find("clickhouse-server").or_else(|| find("clickhouse"))
}

/// Whether `GET /ping` on the port answers `Ok.`.
fn ping(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains("Ok.")
}
