//! A model server's streamed answer (Server-Sent Events of Chat
//! Completions chunks), as the AI analyst reads it: a turn or a protocol
//! error, never a panic; and however the bytes are cut into pieces, the
//! events that come out are the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_ai::openai::parse_stream;
use netspectra_ai::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    if let Ok(turn) = parse_stream(stream) {
        assert!(turn.tool_calls.len() <= 64);
    }
    // Whole, or in two pieces cut anywhere: the same events.
    let cut = usize::from(cut) * stream.len() / 255;
    let mut whole = SseParser::default();
    let mut pieces = SseParser::default();
    let a = whole.push(stream).and_then(|mut e| {
        e.extend(whole.finish()?);
        Ok(e)
    });
    let b = pieces.push(&stream[..cut]).and_then(|mut e| {
        e.extend(pieces.push(&stream[cut..])?);
        e.extend(pieces.finish()?);
        Ok(e)
    });
    if let (Ok(a), Ok(b)) = (a, b) {
        assert_eq!(a, b);
    }
});
