//! Deterministic synthetic traffic with independently computed truth
//! (`netspectra gen OUT [--packets N] [--seed S] [--format pcap|pcapng]`).
//!
//! Every decision comes from one seeded xoshiro256** stream, so the same
//! options always produce a byte-identical capture. The [`Truth`] written
//! next to it (`OUT.truth.json`) is tallied from the generator's own
//! choices, never by parsing the frames back.
//!
//! Traffic model, per packet slot (timestamps from 2026-01-01T00:00:00Z,
//! advancing 0–20 µs, mean 10 µs):
//! - Planted super-spreaders (10.254.0.1, then 10.254.0.2, … for
//!   [`GenOptions::spreaders`]) get exactly `D + D/4` slots each, spread
//!   uniformly over the capture: one small TCP SYN to each of `D` distinct
//!   destinations (10.128.0.0/10) in turn, then `D/4` SYNs to destinations
//!   already seen.
//! - Other slots: ~0.5 % ARP requests (42-byte frames); ~5 / 3 / 2 % large
//!   TCP packets (1000–1400 bytes of payload) from the planted heavy hitters
//!   10.255.0.1 / .2 / .3 to destinations chosen uniformly among `D / 2`
//!   (so they are not super-spreaders); the rest from a
//!   pool of `clamp(packets / 20, 100, 200_000)` sources (~90 % IPv4 in
//!   10.0.0.0/12 and 172.16.0.0/12, ~10 % IPv6 in 2001:db8:1::/48) chosen by
//!   a Zipf(1.1) law whose head is flattened so no pool source exceeds ~1 %
//!   of the packets, to a Zipf(1.1) destination of the same family from a
//!   separate pool of the same size (10.64.0.0/10, 2001:db8:2::/48).
//! - Ordinary packets: TCP 80 % (SYN, SYN|ACK, ACK, FIN|ACK without payload,
//!   PSH|ACK or ACK with), UDP 15 %, ICMP / ICMPv6 echo 5 %; client ports
//!   from 8 per source, server ports 443, 80, 8080, 22 (TCP), 53, 123 (UDP)
//!   or a per-destination port in 10000–59999; payload 40 % empty, 30 %
//!   1–300 bytes, 30 % 1000–1400 bytes (all zero bytes).
//! - Encapsulation: 85 % Ethernet II, 10 % 802.1Q, 5 % QinQ (0x88a8 then
//!   0x8100); VLAN ids 1–4094, fixed per source. ARP frames are untagged.
//! - pcapng files carry two Ethernet interfaces; a packet goes to the one
//!   matching its source index's parity (ARP to interface 0).

mod frame;
mod rng;
mod truth;

pub use truth::{SrcDistinct, SrcStats, Truth};

use frame::{Encap, IpFrame, L4};
use netspectra_model::ip::{self, IpBytes};
use netspectra_model::record::tcp_flags::{ACK, FIN, PSH, SYN};
use rng::{mix64, permute, Rng, Zipf};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use truth::{IpFacts, Tally};

use crate::writer::{PcapNgWriter, PcapWriter, LINKTYPE_ETHERNET};

/// Capture file format written by [`generate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenFormat {
    /// Classic pcap, nanosecond timestamps.
    #[default]
    Pcap,
    /// pcapng with two Ethernet interfaces, nanosecond timestamps.
    PcapNg,
}

impl fmt::Display for GenFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GenFormat::Pcap => "pcap",
            GenFormat::PcapNg => "pcapng",
        })
    }
}

impl FromStr for GenFormat {
    type Err = GenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pcap" => Ok(GenFormat::Pcap),
            "pcapng" => Ok(GenFormat::PcapNg),
            _ => Err(GenError::InvalidOptions(format!(
                "unknown format `{s}`; allowed: pcap, pcapng"
            ))),
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenOptions {
    /// Number of frames to write.
    pub packets: u64,
    /// Seed of the random stream; same seed and options give the same bytes.
    pub seed: u64,
    /// Output format.
    pub format: GenFormat,
    /// Distinct destination counts of extra planted super-spreaders at
    /// 10.254.0.2, 10.254.0.3, … (at most 253, each at most 4 194 303).
    /// Each sends `D + D/4` packets, so keep `D` below ~1.5 % of `packets`
    /// if the heavy hitters must stay the top sources.
    pub spreaders: Vec<u32>,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            packets: 100_000,
            seed: 1,
            format: GenFormat::Pcap,
            spreaders: Vec::new(),
        }
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A truth file could not be encoded or decoded.
    #[error("{}: {source}", path.display())]
    Json {
        /// The truth file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The options cannot be honoured.
    #[error("invalid generator options: {0}")]
    InvalidOptions(String),
}

/// Where the truth of capture `out` is written: the full file name with
/// `.truth.json` appended (`x.pcap` → `x.pcap.truth.json`).
pub fn truth_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(".truth.json");
    PathBuf::from(s)
}

impl Truth {
    /// Reads a truth file written by [`generate`].
    pub fn read(path: &Path) -> Result<Truth, GenError> {
        let file = File::open(path).map_err(|source| GenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_reader(io::BufReader::new(file)).map_err(|source| GenError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// 2026-01-01T00:00:00Z in ns since the Unix epoch.
const START_NS: u64 = 1_767_225_600 * 1_000_000_000;
/// Maximum gap between consecutive timestamps (mean is half of it).
const MAX_GAP_NS: u64 = 20_000;
/// The planted heavy hitters and their share of the non-spreader slots.
const HEAVY: [([u8; 4], f64); 3] = [
    ([10, 255, 0, 1], 0.05),
    ([10, 255, 0, 2], 0.03),
    ([10, 255, 0, 3], 0.02),
];
const ARP_SHARE: f64 = 0.005;
const ZIPF_S: f64 = 1.1;
/// Conversations (destination, client port, protocol) a background source spreads its packets over.
const CONVERSATIONS: u64 = 16;
/// Largest share of packets a pool source may get (before the heavy
/// hitters are mixed in), so the planted ones stay on top.
const POOL_MAX_TOP: f64 = 0.01;
/// Spreader destinations live in a 2^22 address block.
const SPREAD_BITS: u32 = 22;
const MAX_EXTRA_SPREADERS: usize = 253;

/// Server port codes: indices into this table, plus [`PORT_PER_DST`].
const SERVER_PORTS: [u16; 6] = [443, 80, 8080, 22, 53, 123];
const PORT_PER_DST: u8 = 6;

/// The address plan: which index is which address.
struct Plan {
    /// Pool sources are `0..pool_src`; then heavy hitters, then spreaders.
    pool_src: u32,
    /// IPv4 destinations are `0..dst_v4`, IPv6 `dst_v4..dst_v4 + dst_v6`,
    /// spreader destinations `spread_base + j`.
    dst_v4: u32,
    dst_v6: u32,
    spread_base: u32,
}

impl Plan {
    fn heavy(&self, h: usize) -> u32 {
        self.pool_src + h as u32
    }

    fn spreader(&self, k: usize) -> u32 {
        self.pool_src + HEAVY.len() as u32 + k as u32
    }

    fn src_is_v6(&self, src: u32) -> bool {
        src < self.pool_src && mix64(u64::from(src) ^ 0x5EED_0F1B).is_multiple_of(10)
    }

    fn src_addr(&self, src: u32) -> IpBytes {
        if src < self.pool_src {
            if self.src_is_v6(src) {
                v6([0x2001, 0x0db8, 1], src)
            } else {
                // 21 bits: the top one picks 10.0.0.0/12 or 172.16.0.0/12
                // (index + 1 so the most popular source is not 10.0.0.0).
                let p = permute(src + 1, 21);
                let base: u32 = if p >> 20 == 0 {
                    0x0A00_0000
                } else {
                    0xAC10_0000
                };
                ip::from_v4((base | (p & 0x000F_FFFF)).to_be_bytes())
            }
        } else if src < self.spreader(0) {
            ip::from_v4(HEAVY[(src - self.pool_src) as usize].0)
        } else {
            let k = src - self.spreader(0);
            ip::from_v4([10, 254, 0, 1 + k as u8])
        }
    }

    fn dst_addr(&self, dst: u32) -> IpBytes {
        if dst < self.dst_v4 {
            ip::from_v4((0x0A40_0000 | permute(dst + 1, 22)).to_be_bytes())
        } else if dst < self.spread_base {
            v6([0x2001, 0x0db8, 2], dst - self.dst_v4)
        } else {
            let j = dst - self.spread_base;
            ip::from_v4((0x0A80_0000 | permute(j + 1, SPREAD_BITS)).to_be_bytes())
        }
    }

    fn dst_is_v4(&self, dst: u32) -> bool {
        dst < self.dst_v4 || dst >= self.spread_base
    }
}

/// An IPv6 address `prefix:hash:hash:hash:hash:index` (injective in `index`).
fn v6(prefix: [u16; 3], index: u32) -> IpBytes {
    let h = mix64(u64::from(index) ^ u64::from(prefix[2]) << 40);
    let mut a = [0u8; 16];
    for (i, w) in prefix.iter().enumerate() {
        a[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    a[6..8].copy_from_slice(&((h >> 48) as u16 & 0x00ff).to_be_bytes());
    a[8..12].copy_from_slice(&((h as u32) & 0x0000_ffff).to_be_bytes());
    a[12..16].copy_from_slice(&index.to_be_bytes());
    a
}

/// Client (ephemeral) port `k` (0..8) of a source; distinct for distinct `k`.
fn client_port(src: u32, k: u8) -> u16 {
    let base = mix64(u64::from(src) ^ 0xC11E_4700) % 50_000;
    (1024 + (base + u64::from(k) * 6_007) % 50_000) as u16
}

/// The server port a code stands for (codes are injective into ports).
fn server_port(code: u8, dst: u32) -> u16 {
    match SERVER_PORTS.get(code as usize) {
        Some(&p) => p,
        None => (10_000 + mix64(u64::from(dst) ^ 0x5E4F_E400) % 50_000) as u16,
    }
}

/// VLAN ids (outer, inner) fixed per source, each in 1..=4094.
fn vlan_ids(src: u32) -> (u16, u16) {
    let h = mix64(u64::from(src) ^ 0x0071_A900);
    (1 + (h % 4094) as u16, 1 + ((h >> 32) % 4094) as u16)
}

fn mac(kind: u8, index: u32) -> [u8; 6] {
    let b = index.to_be_bytes();
    [0x02, kind, b[0], b[1], b[2], b[3]]
}

/// One planted super-spreader's schedule.
struct Spreader {
    src: u32,
    distinct: u32,
    total: u64,
    sent: u64,
}

/// The frame sink: either writer over a buffered file.
enum Sink {
    Pcap(PcapWriter<BufWriter<File>>),
    PcapNg(PcapNgWriter<BufWriter<File>>),
}

impl Sink {
    fn write(&mut self, iface: u32, ts: u64, frame: &[u8]) -> io::Result<()> {
        match self {
            Sink::Pcap(w) => w.write_packet(ts, frame.len() as u32, frame),
            Sink::PcapNg(w) => w.write_packet(iface, ts, frame.len() as u32, frame),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Pcap(w) => w.finish().map(drop),
            Sink::PcapNg(w) => w.finish().map(drop),
        }
    }
}

/// Writes the synthetic capture `out` and its truth file ([`truth_path`]),
/// and returns the truth.
pub fn generate(out: &Path, opts: &GenOptions) -> Result<Truth, GenError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenError::Io { path, source }
    };
    let n = opts.packets;
    if opts.spreaders.len() > MAX_EXTRA_SPREADERS {
        return Err(GenError::InvalidOptions(format!(
            "at most {MAX_EXTRA_SPREADERS} extra spreaders"
        )));
    }
    let max_spread = (1u32 << SPREAD_BITS) - 1;
    if let Some(d) = opts.spreaders.iter().find(|&&d| d > max_spread) {
        return Err(GenError::InvalidOptions(format!(
            "spreader size {d} above {max_spread}"
        )));
    }

    let pool = (n / 20).clamp(100, 200_000) as u32;
    let dst_v6 = (pool / 10).max(10);
    let plan = Plan {
        pool_src: pool,
        dst_v4: pool - dst_v6,
        dst_v6,
        spread_base: pool,
    };
    let main_d = (n / 100).clamp(50, 20_000).min(n / 4) as u32;
    let mut spreaders: Vec<Spreader> = std::iter::once(main_d)
        .chain(opts.spreaders.iter().copied())
        .enumerate()
        .map(|(k, d)| Spreader {
            src: plan.spreader(k),
            distinct: d,
            total: u64::from(d) + u64::from(d / 4),
            sent: 0,
        })
        .collect();
    let spread_total: u64 = spreaders.iter().map(|s| s.total).sum();
    if spread_total > n / 2 {
        return Err(GenError::InvalidOptions(format!(
            "super-spreaders need {spread_total} packets, more than half of {n}"
        )));
    }
    let sources = plan.spreader(spreaders.len()) as usize;
    // Heavy hitters talk to many destinations, but to fewer than the main
    // super-spreader, which stays the top source by distinct destinations.
    let heavy_dsts = (main_d / 2).clamp(10, plan.dst_v4);

    let src_zipf = Zipf::with_max_top(
        pool as usize,
        ZIPF_S,
        POOL_MAX_TOP.max(1.3 / f64::from(pool)),
    );
    let dst4_zipf = Zipf::new(plan.dst_v4 as usize, ZIPF_S, 0.0);
    let dst6_zipf = Zipf::new(plan.dst_v6 as usize, ZIPF_S, 0.0);
    let mut heavy_cdf = [0.0; HEAVY.len()];
    let mut acc = ARP_SHARE;
    for (c, (_, share)) in heavy_cdf.iter_mut().zip(HEAVY) {
        acc += share;
        *c = acc;
    }

    let file = File::create(out).map_err(io_err(out))?;
    let w = BufWriter::with_capacity(1 << 20, file);
    let mut sink = match opts.format {
        GenFormat::Pcap => {
            Sink::Pcap(PcapWriter::new(w, LINKTYPE_ETHERNET, 65_535, true).map_err(io_err(out))?)
        }
        GenFormat::PcapNg => {
            let mut ng = PcapNgWriter::new(w).map_err(io_err(out))?;
            ng.add_interface(LINKTYPE_ETHERNET as u16, 65_535)
                .map_err(io_err(out))?;
            ng.add_interface(LINKTYPE_ETHERNET as u16, 65_535)
                .map_err(io_err(out))?;
            Sink::PcapNg(ng)
        }
    };

    let mut rng = Rng::new(opts.seed);
    let mut tally = Tally::new(sources);
    let mut buf = Vec::with_capacity(2048);
    let mut ts = START_NS;
    let mut spread_left = spread_total;

    for i in 0..n {
        if i > 0 {
            ts += rng.below(MAX_GAP_NS + 1);
        }
        // Sequential sampling: each spreader gets exactly its share of the
        // remaining slots, uniformly spread.
        let mut pick = rng.below(n - i);
        let mut spreader = None;
        if pick < spread_left {
            for (k, s) in spreaders.iter().enumerate() {
                let left = s.total - s.sent;
                if pick < left {
                    spreader = Some(k);
                    break;
                }
                pick -= left;
            }
        }

        let (src, dst, l4, k, code, payload) = if let Some(k) = spreader {
            spread_left -= 1;
            let s = &mut spreaders[k];
            let j = if s.sent < u64::from(s.distinct) {
                s.sent as u32
            } else {
                rng.below(u64::from(s.distinct)) as u32
            };
            s.sent += 1;
            let l4 = L4::Tcp {
                flags: SYN,
                seq: rng.next_u64() as u32,
                ack: 0,
            };
            let code = rng.below(4) as u8; // 443, 80, 8080, 22
            let port_k = rng.below(8) as u8;
            (s.src, plan.spread_base + j, l4, port_k, code, 0)
        } else {
            let r = rng.unit();
            if r < ARP_SHARE {
                let src = loop {
                    let s = src_zipf.sample(&mut rng) as u32;
                    if !plan.src_is_v6(s) {
                        break s;
                    }
                };
                let dst = dst4_zipf.sample(&mut rng) as u32;
                let sa = plan.src_addr(src);
                let da = plan.dst_addr(dst);
                let len = frame::build_arp(
                    &mut buf,
                    mac(0, src),
                    sa[12..16].try_into().expect("4 bytes"),
                    da[12..16].try_into().expect("4 bytes"),
                );
                assert_eq!(len, buf.len());
                tally.non_ip(len as u64);
                sink.write(0, ts, &buf).map_err(io_err(out))?;
                continue;
            }
            if let Some(h) = heavy_cdf.iter().position(|&c| r < c) {
                let dst = rng.below(u64::from(heavy_dsts)) as u32;
                let payload = rng.range(1000, 1400) as usize;
                let l4 = L4::Tcp {
                    flags: PSH | ACK,
                    seq: rng.next_u64() as u32,
                    ack: rng.next_u64() as u32,
                };
                let k = rng.below(8) as u8;
                (plan.heavy(h), dst, l4, k, 0, payload)
            } else {
                let src = src_zipf.sample(&mut rng) as u32;
                // A source talks over a few conversations, each a fixed
                // destination, client port slot and protocol, so flows carry
                // several packets as in real traffic (most sources use 1-3).
                let conv = (rng.unit().powi(3) * CONVERSATIONS as f64) as u64;
                let mut crng = Rng::new(mix64(opts.seed ^ (u64::from(src) << 8) ^ conv));
                let dst = if plan.src_is_v6(src) {
                    plan.dst_v4 + dst6_zipf.sample(&mut crng) as u32
                } else {
                    dst4_zipf.sample(&mut crng) as u32
                };
                let p = crng.below(100);
                let k = crng.below(8) as u8;
                let conv_code = crng.below(100);
                let payload = match rng.below(10) {
                    0..=3 => 0,
                    4..=6 => rng.range(1, 300) as usize,
                    _ => rng.range(1000, 1400) as usize,
                };
                if p < 80 {
                    let f = rng.below(100);
                    let flags = if payload == 0 {
                        match f {
                            0..=14 => SYN,
                            15..=24 => SYN | ACK,
                            25..=84 => ACK,
                            _ => FIN | ACK,
                        }
                    } else if f < 80 {
                        PSH | ACK
                    } else {
                        ACK
                    };
                    let code = match conv_code {
                        0..=49 => 0,
                        50..=69 => 1,
                        70..=77 => 2,
                        78..=84 => 3,
                        _ => PORT_PER_DST,
                    };
                    let ack = if flags & ACK != 0 {
                        rng.next_u64() as u32
                    } else {
                        0
                    };
                    let l4 = L4::Tcp {
                        flags,
                        seq: rng.next_u64() as u32,
                        ack,
                    };
                    (src, dst, l4, k, code, payload)
                } else if p < 95 {
                    let code = match conv_code % 10 {
                        0..=5 => 4,
                        6..=7 => 5,
                        _ => PORT_PER_DST,
                    };
                    (src, dst, L4::Udp, k, code, payload)
                } else {
                    let l4 = L4::Echo {
                        id: client_port(src, k),
                        seq: rng.next_u64() as u16,
                    };
                    (src, dst, l4, 0, 0, payload)
                }
            }
        };

        let v4 = !plan.src_is_v6(src);
        debug_assert_eq!(v4, plan.dst_is_v4(dst));
        let encap = match rng.below(100) {
            0..=84 => Encap::Plain,
            85..=94 => Encap::Vlan(vlan_ids(src).1),
            _ => {
                let (outer, inner) = vlan_ids(src);
                Encap::QinQ(outer, inner)
            }
        };
        let (src_port, dst_port) = match l4 {
            L4::Echo { .. } => (0, 0),
            _ => (client_port(src, k), server_port(code, dst)),
        };
        let f = IpFrame {
            encap,
            src_mac: mac(0, src),
            dst_mac: mac(1, dst),
            v4,
            src: plan.src_addr(src),
            dst: plan.dst_addr(dst),
            ip_id: rng.next_u64() as u16,
            l4,
            src_port,
            dst_port,
            payload,
        };
        let wire_len = f.wire_len();
        let len = frame::build_ip(&mut buf, &f);
        assert_eq!(len, wire_len);
        let protocol = l4.protocol(v4);
        let proto_code: u16 = match l4 {
            L4::Tcp { .. } => 0,
            L4::Udp => 1,
            L4::Echo { .. } => 2,
        };
        tally.ip(&IpFacts {
            src,
            dst,
            flow_code: u16::from(k) << 8 | u16::from(code) << 4 | proto_code,
            wire_len: wire_len as u64,
            v4,
            tagged: encap != Encap::Plain,
            qinq: matches!(encap, Encap::QinQ(..)),
            protocol,
        });
        sink.write(src & 1, ts, &buf).map_err(io_err(out))?;
    }
    sink.finish().map_err(io_err(out))?;

    let (per_src, distinct_dst_per_src_top) = tally.per_src(|s| ip::to_string(&plan.src_addr(s)));
    let truth = Truth {
        packets: tally.packets,
        bytes: tally.bytes,
        ip_packets: tally.ip_packets,
        ip_bytes: tally.ip_bytes,
        non_ip_packets: tally.non_ip,
        ipv4_packets: tally.v4,
        ipv6_packets: tally.v6,
        vlan_packets: tally.vlan,
        qinq_packets: tally.qinq,
        tcp_packets: tally.tcp,
        udp_packets: tally.udp,
        icmp_packets: tally.icmp,
        per_src,
        distinct_flows: tally.distinct_flows(),
        distinct_dst_per_src_top,
        heavy_hitters: HEAVY
            .iter()
            .map(|(a, _)| ip::to_string(&ip::from_v4(*a)))
            .collect(),
        super_spreaders: spreaders
            .iter()
            .map(|s| {
                let distinct_dst = tally.distinct_dst(s.src);
                SrcDistinct {
                    src: ip::to_string(&plan.src_addr(s.src)),
                    distinct_dst,
                    reported_by_default: Some(
                        distinct_dst >= netspectra_model::task::DEFAULT_SPREAD_THRESHOLD,
                    ),
                }
            })
            .collect(),
        seed: opts.seed,
        format: opts.format,
        first_ts_ns: START_NS,
        last_ts_ns: ts,
    };

    let tp = truth_path(out);
    let file = File::create(&tp).map_err(io_err(&tp))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, &truth).map_err(|source| GenError::Json {
        path: tp.clone(),
        source,
    })?;
    io::Write::write_all(&mut w, b"\n").map_err(io_err(&tp))?;
    io::Write::flush(&mut w).map_err(io_err(&tp))?;
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn plan(pool: u32) -> Plan {
        let dst_v6 = (pool / 10).max(10);
        Plan {
            pool_src: pool,
            dst_v4: pool - dst_v6,
            dst_v6,
            spread_base: pool,
        }
    }

    #[test]
    fn addresses_are_distinct_and_in_their_ranges() {
        let p = plan(200_000);
        let mut seen = HashSet::new();
        let mut v6 = 0;
        for s in 0..p.spreader(254) {
            let a = p.src_addr(s);
            assert!(seen.insert(a), "source {s} collides");
            v6 += u32::from(!ip::is_v4(&a));
            let text = ip::to_string(&a);
            assert!(
                text.starts_with("10.")
                    || text.starts_with("172.")
                    || text.starts_with("2001:db8:1:"),
                "{text}"
            );
        }
        assert!((18_000..22_000).contains(&v6), "{v6}");
        assert_eq!(ip::to_string(&p.src_addr(p.heavy(0))), "10.255.0.1");
        assert_eq!(ip::to_string(&p.src_addr(p.spreader(0))), "10.254.0.1");
        assert_eq!(ip::to_string(&p.src_addr(p.spreader(253))), "10.254.0.254");
        let mut seen = HashSet::new();
        for d in (0..p.spread_base).chain(p.spread_base..p.spread_base + 100_000) {
            assert!(seen.insert(p.dst_addr(d)), "destination {d} collides");
            assert_eq!(p.dst_is_v4(d), ip::is_v4(&p.dst_addr(d)));
        }
    }

    #[test]
    fn ports_are_injective() {
        for src in 0..1000 {
            let ports: HashSet<u16> = (0..8).map(|k| client_port(src, k)).collect();
            assert_eq!(ports.len(), 8);
            assert!(ports.iter().all(|&p| p >= 1024));
        }
        for dst in 0..1000 {
            let ports: HashSet<u16> = (0..=PORT_PER_DST).map(|c| server_port(c, dst)).collect();
            assert_eq!(ports.len(), 7);
        }
    }

    #[test]
    fn truth_path_appends_to_the_file_name() {
        assert_eq!(
            truth_path(Path::new("/tmp/x.pcap")),
            PathBuf::from("/tmp/x.pcap.truth.json")
        );
    }
}
