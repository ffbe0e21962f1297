//! The pcapng reader over any bytes (a section header magic is put in
//! front when missing): packets until the end or a `Damaged` error with
//! an offset inside the input, never a panic, a hang or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_capture::decode::decode;
use netspectra_capture::reader::{CaptureError, CaptureReader};
use netspectra_model::PacketRecord;

const SHB: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

fuzz_target!(|data: &[u8]| {
    let owned;
    let bytes = if data.starts_with(&SHB) {
        data
    } else {
        let mut v = SHB.to_vec();
        v.extend_from_slice(data);
        owned = v;
        &owned
    };
    let Ok(mut reader) = CaptureReader::new(bytes, "fuzz.pcapng") else {
        return;
    };
    let mut rec = PacketRecord::default();
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                assert!(p.data.len() <= netspectra_capture::reader::MAX_PACKET_LEN as usize);
                decode(p.link_type, p.data, &mut rec);
            }
            Ok(None) => break,
            Err(CaptureError::Damaged { offset, .. }) => {
                assert!(offset <= bytes.len() as u64, "damage offset past the input");
                break;
            }
            Err(_) => break,
        }
    }
    assert!(matches!(reader.next_packet(), Ok(None)));
});
