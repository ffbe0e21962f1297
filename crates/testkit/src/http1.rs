//! Reading one HTTP/1.1 request, for the test servers (webhook receiver,
//! OpenAI-protocol server): enough of the protocol for well-behaved
//! clients, on purpose no more.

use std::io::BufRead;

/// One request: its path, the headers asked for, its body.
pub(crate) struct Request {
    /// Request target (`/v1/chat/completions`).
    pub path: String,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// The next request on `reader` (None: the client closed the connection).
pub(crate) fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        path,
        authorization,
        body,
    }))
}
