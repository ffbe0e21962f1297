//! Real components for tests: each harness starts its own server (or network
//! namespace) on loopback with a temporary directory, waits until it answers,
//! and tears it down on drop. A missing binary is a test failure whose
//! message names the package that installs it — never a silent skip.

pub mod clickhouse;
mod http1;
pub mod nats;
pub mod netns;
pub mod openai;
pub mod planted;
pub mod smtp;
pub mod webhook;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
