//! Server-Sent Events, read incrementally: bytes arrive in arbitrary
//! pieces, events come out whole (`event:` name and `data:` lines joined
//! by `\n`), as the WHATWG EventSource rules say — LF, CRLF or CR line
//! ends, `:` comments, one optional space after the colon, a blank line
//! ending an event.

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` name (empty: the default, `message`).
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// Longest line accepted: an endless line from a broken server must not
/// grow memory without bound.
pub const MAX_LINE: usize = 4 << 20;
/// Most data one event may carry (its `data:` lines together), for the
/// same reason.
pub const MAX_EVENT: usize = 4 << 20;

/// Turns pieces of an event stream into events.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    last_was_cr: bool,
    event: String,
    data: Vec<String>,
    data_bytes: usize,
}

/// The stream is not an event stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SseError(pub String);

impl SseParser {
    /// Feeds the next piece; returns the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.last_was_cr => self.last_was_cr = false,
                b'\n' | b'\r' => {
                    self.last_was_cr = b == b'\r';
                    self.end_line(&mut out)?;
                }
                _ => {
                    self.last_was_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError(format!(
                            "an event-stream line longer than {MAX_LINE} bytes"
                        )));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The event still open when the stream ended (a server that did not
    /// end its last event with a blank line).
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out)?;
        }
        self.end_line(&mut out)?;
        Ok(out.pop())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8(line)
            .map_err(|_| SseError("an event-stream line is not UTF-8".into()))?;
        if line.is_empty() {
            if !self.data.is_empty() {
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            self.event.clear();
            self.data_bytes = 0;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                self.data_bytes += value.len() + 1;
                if self.data_bytes > MAX_EVENT {
                    return Err(SseError(format!(
                        "an event carrying more than {MAX_EVENT} bytes"
                    )));
                }
                self.data.push(value.to_string());
            }
            "event" => self.event = value.to_string(),
            // `id` and `retry` steer reconnection, which a one-shot answer
            // does not do; unknown fields are ignored, as the rules say.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece).unwrap());
        }
        out.extend(p.finish().unwrap());
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_come_out_whole_however_the_bytes_are_cut() {
        let stream = b": keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: done\ndata:x\ndata: y\n\ndata: [DONE]\n\n";
        let want = vec![ev("", "{\"a\":1}"), ev("done", "x\ny"), ev("", "[DONE]")];
        assert_eq!(all(&[stream]), want);
        // Every cut, including between CR and LF.
        for cut in 0..stream.len() {
            assert_eq!(all(&[&stream[..cut], &stream[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), want);
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(all(&[b"data: tail"]), vec![ev("", "tail")]);
        assert_eq!(all(&[b"\r\r"]), vec![]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: \xff\xfe\n").is_err());
        let mut p = SseParser::default();
        assert!(p.push(&vec![b'a'; MAX_LINE + 1]).is_err());
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "x".repeat(1 << 20));
        let mut failed = false;
        for _ in 0..5 {
            failed |= p.push(line.as_bytes()).is_err();
        }
        assert!(failed, "an event without end is refused");
    }
}
