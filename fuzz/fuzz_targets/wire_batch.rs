//! The protobuf batch codec (`proto::wire`) over any message: decoding
//! fails cleanly or yields a batch that encodes and decodes again to the
//! same header and packet count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_proto::wire;

fuzz_target!(|data: &[u8]| {
    let header_only = wire::decode_batch_header(data);
    let mut packets = Vec::new();
    let Ok(header) = wire::decode_batch(data, &mut packets) else {
        return;
    };
    assert_eq!(
        header_only.ok(),
        Some(header),
        "header-only and full decoding agree"
    );
    assert_eq!(header.packets, packets.len());
    let _ = wire::decode_packet(data);
    let mut out = Vec::new();
    for p in &packets {
        wire::encode_packet(p, &mut out);
    }
    wire::encode_batch_header(header.probe_id, header.shard, header.seq, &mut out);
    let mut again = Vec::new();
    let h2 = wire::decode_batch(&out, &mut again).expect("an encoded batch decodes");
    assert_eq!(
        (h2.probe_id, h2.shard, h2.seq, h2.packets),
        (header.probe_id, header.shard, header.seq, header.packets)
    );
});
