//! The pcap reader over any bytes: packets until the end or a `Damaged`
//! error, never a panic, a hang or a huge allocation. Input that does not
//! start with a pcap magic gets one (chosen by its first byte), so the
//! fuzzer spends its time past the magic check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_capture::decode::decode;
use netspectra_capture::reader::CaptureReader;
use netspectra_model::PacketRecord;

const MAGICS: [[u8; 4]; 4] = [
    [0xD4, 0xC3, 0xB2, 0xA1],
    [0xA1, 0xB2, 0xC3, 0xD4],
    [0x4D, 0x3C, 0xB2, 0xA1],
    [0xA1, 0xB2, 0x3C, 0x4D],
];

fuzz_target!(|data: &[u8]| {
    let owned;
    let bytes = if data.len() >= 4 && MAGICS.iter().any(|m| data.starts_with(m)) {
        data
    } else {
        let Some((&first, rest)) = data.split_first() else {
            return;
        };
        let mut v = MAGICS[usize::from(first % 4)].to_vec();
        v.extend_from_slice(rest);
        owned = v;
        &owned
    };
    let Ok(mut reader) = CaptureReader::new(bytes, "fuzz.pcap") else {
        return;
    };
    let mut rec = PacketRecord::default();
    let mut count = 0u64;
    while let Ok(Some(p)) = reader.next_packet() {
        assert!(p.data.len() <= netspectra_capture::reader::MAX_PACKET_LEN as usize);
        decode(p.link_type, p.data, &mut rec);
        count += 1;
    }
    assert!(
        count as usize <= bytes.len() / 16 + 1,
        "more packets than records fit"
    );
    // Once ended (cleanly or damaged), the reader stays ended.
    assert!(matches!(reader.next_packet(), Ok(None)));
});
