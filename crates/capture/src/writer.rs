//! Streaming pcap and pcapng writers over any [`std::io::Write`].
//!
//! Both writers emit little-endian files and never allocate per packet: each
//! record header is assembled in a stack array and written next to the
//! caller's frame bytes. Wrap the sink in a [`std::io::BufWriter`]; the
//! writers issue several small writes per packet.

use std::io::{self, Write};

/// Classic pcap magic for microsecond timestamps.
pub const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
/// Classic pcap magic for nanosecond timestamps.
pub const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
/// pcapng Section Header Block type.
pub const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
/// pcapng Interface Description Block type.
pub const PCAPNG_IDB: u32 = 0x0000_0001;
/// pcapng Enhanced Packet Block type.
pub const PCAPNG_EPB: u32 = 0x0000_0006;
/// pcapng byte-order magic.
pub const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Link type (both pcap `network` and pcapng `LinkType`) of Ethernet II.
pub const LINKTYPE_ETHERNET: u32 = 1;

const ZERO_PAD: [u8; 4] = [0; 4];

/// Writes a classic pcap file: the 24-byte global header on creation, then
/// one 16-byte record header plus the frame bytes per packet.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    snaplen: u32,
    nanosecond: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (version 2.4, little-endian) and returns the
    /// writer. `nanosecond` selects the nanosecond magic (`a1b23c4d`) instead
    /// of the microsecond one (`a1b2c3d4`).
    pub fn new(mut w: W, link_type: u32, snaplen: u32, nanosecond: bool) -> io::Result<Self> {
        let mut h = [0u8; 24];
        let magic = if nanosecond {
            PCAP_MAGIC_NS
        } else {
            PCAP_MAGIC_US
        };
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay zero.
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&link_type.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter {
            w,
            snaplen,
            nanosecond,
        })
    }

    /// Appends one packet. `ts_ns` is nanoseconds since the Unix epoch
    /// (rounded down to microseconds for a microsecond file); `data` is cut
    /// to the snap length and its written length becomes `incl_len`, while
    /// `wire_len` is recorded as `orig_len` unchanged.
    pub fn write_packet(&mut self, ts_ns: u64, wire_len: u32, data: &[u8]) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let secs = ts_ns / 1_000_000_000;
        let sub = ts_ns % 1_000_000_000;
        let frac = if self.nanosecond { sub } else { sub / 1_000 };
        let secs = u32::try_from(secs).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "timestamp beyond the pcap 32-bit seconds range",
            )
        })?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&(frac as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&wire_len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Writes a pcapng file with a single section: a Section Header Block on
/// creation, an Interface Description Block per [`PcapNgWriter::add_interface`],
/// and an Enhanced Packet Block per packet.
#[derive(Debug)]
pub struct PcapNgWriter<W: Write> {
    w: W,
    /// Snap length of each interface, indexed by interface id (0 = unlimited).
    snaplens: Vec<u32>,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the Section Header Block (little-endian, version 1.0, section
    /// length -1 = unspecified, no options) and returns the writer.
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut b = [0u8; 28];
        b[0..4].copy_from_slice(&PCAPNG_SHB.to_le_bytes());
        b[4..8].copy_from_slice(&28u32.to_le_bytes());
        b[8..12].copy_from_slice(&PCAPNG_BYTE_ORDER_MAGIC.to_le_bytes());
        b[12..14].copy_from_slice(&1u16.to_le_bytes());
        b[14..16].copy_from_slice(&0u16.to_le_bytes());
        b[16..24].copy_from_slice(&(-1i64).to_le_bytes());
        b[24..28].copy_from_slice(&28u32.to_le_bytes());
        w.write_all(&b)?;
        Ok(PcapNgWriter {
            w,
            snaplens: Vec::new(),
        })
    }

    /// Writes an Interface Description Block with the option
    /// `if_tsresol = 9` (timestamps in nanoseconds) and returns the new
    /// interface's id (0, 1, … in order of addition).
    pub fn add_interface(&mut self, link_type: u16, snaplen: u32) -> io::Result<u32> {
        const LEN: u32 = 32;
        let mut b = [0u8; LEN as usize];
        b[0..4].copy_from_slice(&PCAPNG_IDB.to_le_bytes());
        b[4..8].copy_from_slice(&LEN.to_le_bytes());
        b[8..10].copy_from_slice(&link_type.to_le_bytes());
        // b[10..12] reserved
        b[12..16].copy_from_slice(&snaplen.to_le_bytes());
        // Option if_tsresol (code 9, length 1, value 9), padded to 4.
        b[16..18].copy_from_slice(&9u16.to_le_bytes());
        b[18..20].copy_from_slice(&1u16.to_le_bytes());
        b[20] = 9;
        // b[24..28]: opt_endofopt (code 0, length 0).
        b[28..32].copy_from_slice(&LEN.to_le_bytes());
        self.w.write_all(&b)?;
        let id = self.snaplens.len() as u32;
        self.snaplens.push(snaplen);
        Ok(id)
    }

    /// Appends one packet on interface `if_id` as an Enhanced Packet Block.
    /// `ts_ns` is nanoseconds since the Unix epoch; `data` is cut to the
    /// interface's snap length (if non-zero) and padded to 4 bytes;
    /// `wire_len` is recorded as the original length.
    pub fn write_packet(
        &mut self,
        if_id: u32,
        ts_ns: u64,
        wire_len: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let snaplen = *self.snaplens.get(if_id as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pcapng interface {if_id} was never added"),
            )
        })?;
        let data = if snaplen == 0 {
            data
        } else {
            &data[..data.len().min(snaplen as usize)]
        };
        let cap = data.len() as u32;
        let pad = (4 - (cap % 4)) % 4;
        let total = 28 + cap + pad + 4;
        let mut h = [0u8; 28];
        h[0..4].copy_from_slice(&PCAPNG_EPB.to_le_bytes());
        h[4..8].copy_from_slice(&total.to_le_bytes());
        h[8..12].copy_from_slice(&if_id.to_le_bytes());
        h[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        h[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
        h[20..24].copy_from_slice(&cap.to_le_bytes());
        h[24..28].copy_from_slice(&wire_len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)?;
        self.w.write_all(&ZERO_PAD[..pad as usize])?;
        self.w.write_all(&total.to_le_bytes())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_layout() {
        let mut w = PcapWriter::new(Vec::new(), 1, 4, true).unwrap();
        w.write_packet(1_500_000_123, 10, &[1, 2, 3, 4, 5, 6])
            .unwrap();
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 24 + 16 + 4);
        assert_eq!(&b[0..4], &PCAP_MAGIC_NS.to_le_bytes());
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(b[28..32].try_into().unwrap()),
            500_000_123
        );
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), 10);
        assert_eq!(&b[40..], &[1, 2, 3, 4]);

        let mut w = PcapWriter::new(Vec::new(), 1, 65535, false).unwrap();
        w.write_packet(1_500_000_123, 3, &[7, 8, 9]).unwrap();
        let b = w.finish().unwrap();
        assert_eq!(&b[0..4], &PCAP_MAGIC_US.to_le_bytes());
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 500_000);
    }

    #[test]
    fn pcapng_layout() {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        assert_eq!(w.add_interface(1, 0).unwrap(), 0);
        assert_eq!(w.add_interface(1, 65535).unwrap(), 1);
        w.write_packet(1, 0x1_0000_0002, 5, &[1, 2, 3, 4, 5])
            .unwrap();
        assert!(w.write_packet(2, 0, 1, &[0]).is_err());
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 28 + 32 + 32 + 28 + 8 + 4);
        let epb = &b[92..];
        let u = |o: usize| u32::from_le_bytes(epb[o..o + 4].try_into().unwrap());
        assert_eq!(u(0), PCAPNG_EPB);
        assert_eq!(u(4), 40);
        assert_eq!(u(8), 1);
        assert_eq!(u(12), 1);
        assert_eq!(u(16), 2);
        assert_eq!(u(20), 5);
        assert_eq!(u(24), 5);
        assert_eq!(&epb[28..36], &[1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!(u(36), 40);
    }
}
