//! The API's query-string parsing, as each operation's handler reads it:
//! a validated question or a 400, never a panic; an accepted limit never
//! exceeds the server's maximum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_api::http::parse_query;
use netspectra_api::Limits;

const OPS: [&str; 9] = [
    "tasks",
    "runs",
    "aggregate",
    "top",
    "trace",
    "heavy-hitters",
    "super-spreaders",
    "timeseries",
    "health",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    let limits = Limits::default();
    let op = OPS[usize::from(which) % OPS.len()];
    if let Ok(q) = parse_query(op, query, limits) {
        if let Some(ask) = q.ask {
            assert!(ask.limit <= limits.max_rows);
            assert!(ask.range.from_ns < ask.range.to_ns);
        }
    }
});
