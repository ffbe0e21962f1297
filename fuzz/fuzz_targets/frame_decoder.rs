//! The frame decoder over any frame on any link type it knows (and some it
//! does not): a record whose status says what it found, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_capture::decode::decode;
use netspectra_capture::link::LinkType;
use netspectra_model::PacketRecord;

const LINKS: [LinkType; 11] = [
    LinkType::ETHERNET,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::RAW,
    LinkType::RAW_12,
    LinkType::RAW_14,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType(147), // a user link type: not decoded
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(which) % LINKS.len()];
    let mut rec = PacketRecord::default();
    decode(link, frame, &mut rec);
    // Decoding the same frame again gives the same record.
    let mut again = PacketRecord::default();
    decode(link, frame, &mut again);
    assert_eq!(format!("{rec:?}"), format!("{again:?}"));
});
