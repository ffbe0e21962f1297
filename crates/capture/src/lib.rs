//! Getting packets in: capture files, frames decoded to records, synthetic traffic.
//!
//! - [`reader`]: streaming pcap and pcapng readers behind one [`reader::CaptureReader`].
//! - [`link`]: link-layer types and how each is unwrapped down to IP.
//! - [`decode`]: a frame to a [`netspectra_model::PacketRecord`], allocation-free.
//! - [`writer`]: pcap and pcapng writers (generator, probe persistence).
//! - [`gen`]: deterministic synthetic traffic with independently computed truth.
//! - [`live`]: live capture through libpcap, loaded at run time.
//! - [`persist`]: rotating pcap files of captured packets, off the capture thread.

pub mod decode;
pub mod gen;
pub mod link;
pub mod live;
mod mapped;
pub mod persist;
pub mod reader;
pub mod writer;
