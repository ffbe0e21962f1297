//! Network namespaces joined by a veth pair, for live-capture tests.
//!
//! [`VethPair::new`] creates two namespaces with names unique to this process
//! and pair, a veth link between them, addresses on a private /30 (which
//! exist only inside these namespaces) and permanent neighbour entries (so no
//! ARP traffic precedes the first datagram). Dropping the value deletes both
//! namespaces, which deletes the veth. A test runs a capture in one namespace
//! and sends traffic from the other with [`VethPair::command`]:
//!
//! ```no_run
//! use netspectra_testkit::netns::VethPair;
//! let pair = VethPair::new();
//! let out = VethPair::exec_in(&pair.ns_a, "ping", &["-c", "1", &pair.ip_b.to_string()]);
//! assert!(out.status.success());
//! ```
//!
//! Needs root and iproute2; without them it panics with a message saying
//! what to install (tests fail, they never skip).

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces `ns_a` and `ns_b` joined by veth `if_a` ↔ `if_b`.
#[derive(Debug)]
pub struct VethPair {
    /// Namespace holding `if_a` (usually the sender).
    pub ns_a: String,
    /// Namespace holding `if_b` (usually the capture).
    pub ns_b: String,
    /// Interface in `ns_a`.
    pub if_a: String,
    /// Interface in `ns_b`.
    pub if_b: String,
    /// Address of `if_a`.
    pub ip_a: Ipv4Addr,
    /// Address of `if_b`.
    pub ip_b: Ipv4Addr,
}

impl VethPair {
    /// Creates the namespaces, the veth pair, addresses and neighbours, and
    /// brings every link up. Panics (with what to install or fix) when `ip`
    /// is missing, the process is not root, or a step fails.
    pub fn new() -> Self {
        require_root();
        require_ip();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // /30 networks inside 10.192.0.0/16, one per (process, pair).
        let slot = pid.wrapping_mul(31).wrapping_add(n) & 0x3FFF;
        let net = u32::from(Ipv4Addr::new(10, 192, 0, 0)) + (slot << 2);
        let pair = VethPair {
            ns_a: format!("ns-{pid}-{n}-a"),
            ns_b: format!("ns-{pid}-{n}-b"),
            // Interface names are at most 15 bytes: "va" + pid (≤ 7) + "-" + n.
            if_a: format!("va{pid}-{}", n % 1000),
            if_b: format!("vb{pid}-{}", n % 1000),
            ip_a: Ipv4Addr::from(net + 1),
            ip_b: Ipv4Addr::from(net + 2),
        };
        // Locally administered MACs derived from the slot.
        let mac = |side: u8| {
            let [_, _, hi, lo] = slot.to_be_bytes();
            format!("02:4e:53:{hi:02x}:{lo:02x}:{side:02x}")
        };
        let (mac_a, mac_b) = (mac(0xa), mac(0xb));
        // Built before any namespace exists: from here on, Drop cleans up.
        ip(&["netns", "add", &pair.ns_a]);
        ip(&["netns", "add", &pair.ns_b]);
        ip(&[
            "link", "add", &pair.if_a, "address", &mac_a, "netns", &pair.ns_a, "type", "veth",
            "peer", "name", &pair.if_b, "address", &mac_b, "netns", &pair.ns_b,
        ]);
        for (ns, ifname, me, peer, peer_mac) in [
            (&pair.ns_a, &pair.if_a, pair.ip_a, pair.ip_b, &mac_b),
            (&pair.ns_b, &pair.if_b, pair.ip_b, pair.ip_a, &mac_a),
        ] {
            let addr = format!("{me}/30");
            let peer = peer.to_string();
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &addr, "dev", ifname]);
            ip(&["-n", ns, "link", "set", ifname, "up"]);
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &peer,
                "lladdr",
                peer_mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ]);
        }
        pair
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec`);
    /// add arguments and spawn it like any [`Command`].
    pub fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Runs `cmd args…` inside namespace `ns` and returns its output.
    pub fn exec_in(ns: &str, cmd: &str, args: &[&str]) -> Output {
        VethPair::command(ns, cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {ns} {cmd}`: {e}"))
    }
}

impl Default for VethPair {
    fn default() -> Self {
        VethPair::new()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `ip args…`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}; install it: apt-get install iproute2"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn require_ip() {
    if let Err(e) = Command::new("ip").arg("-V").output() {
        panic!("live-capture tests need the `ip` tool ({e}): apt-get install iproute2");
    }
}

/// Panics unless the effective user is root (namespaces and raw capture
/// need it): such tests fail, never skip.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    assert!(
        euid == Some(0),
        "live-capture tests need root (network namespaces, veth, raw capture); \
         run them as root, as CI does (effective uid: {euid:?})"
    );
}
