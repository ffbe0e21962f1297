//! A real HTTP server speaking OpenAI's Chat Completions protocol, for
//! tests of the AI analyst: each request to `/v1/chat/completions` gets
//! the next scripted [`Reply`] — a JSON answer, a Server-Sent Events
//! stream sent piece by piece (with pauses, or held until the test opens
//! a [`Gate`]), an error status, or a stream that stalls — and every
//! request is kept for the test to inspect.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One step of a streamed answer.
#[derive(Clone)]
pub enum Step {
    /// Writes these bytes at once.
    Send(String),
    /// Waits this long.
    Pause(Duration),
    /// Waits until the gate opens (at most a minute).
    Wait(Gate),
}

/// What one request is answered with.
#[derive(Clone)]
pub enum Reply {
    /// `status` with a JSON body (and `Retry-After` when given).
    Json {
        /// Status code.
        status: u16,
        /// Body.
        body: Value,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// 200 `text/event-stream`, written step by step, then the
    /// connection closes.
    Stream(Vec<Step>),
}

/// A latch a test opens to let a held stream go on.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// Lets every waiter go on.
    pub fn open(&self) {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let guard = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .0
             .1
            .wait_timeout_while(guard, Duration::from_secs(60), |open| !*open);
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// The server; its thread ends with the process.
pub struct OpenAiServer {
    port: u16,
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl OpenAiServer {
    /// Starts on a loopback port; requests beyond the script get a 500.
    pub fn start(script: Vec<Reply>) -> OpenAiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (script.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &s, &r);
                });
            }
        });
        OpenAiServer {
            port,
            script,
            received,
        }
    }

    /// The base URL to configure (`ai.base_url`): `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Adds replies to the script.
    pub fn push(&self, replies: Vec<Reply>) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(replies);
    }

    /// Requests received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn serve(
    stream: TcpStream,
    script: &Mutex<VecDeque<Reply>>,
    received: &Mutex<Vec<Received>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(crate::http1::Request {
        path,
        authorization,
        body,
    }) = crate::http1::read_request(&mut reader)?
    else {
        return Ok(());
    };
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            path,
            authorization,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        });
    let reply = script
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop_front()
        .unwrap_or(Reply::Json {
            status: 500,
            body: json!({"error": {"message": "the test's script has no more replies"}}),
            retry_after: None,
        });
    let mut out = &stream;
    match reply {
        Reply::Json {
            status,
            body,
            retry_after,
        } => {
            let body = body.to_string();
            let retry = retry_after
                .map(|s| format!("retry-after: {s}\r\n"))
                .unwrap_or_default();
            write!(
                out,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        Reply::Stream(steps) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
            )?;
            out.flush()?;
            for step in steps {
                match step {
                    Step::Send(text) => {
                        out.write_all(text.as_bytes())?;
                        out.flush()?;
                    }
                    Step::Pause(d) => std::thread::sleep(d),
                    Step::Wait(gate) => gate.wait(),
                }
            }
        }
    }
    out.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

/// An SSE event carrying a piece of the answer's text.
pub fn text_chunk(text: &str) -> Step {
    Step::Send(format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    ))
}

/// SSE events streaming one tool call in two pieces, as OpenAI does.
pub fn tool_call_chunks(index: u32, id: &str, name: &str, arguments: &Value) -> Vec<Step> {
    let args = arguments.to_string();
    let (a, b) = args.split_at(args.len() / 2);
    vec![
        Step::Send(format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": a}}]}}]})
        )),
        Step::Send(format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": index, "function": {"arguments": b}}]}}]})
        )),
    ]
}

/// The SSE event ending a turn with `reason`, then `[DONE]`.
pub fn finish(reason: &str) -> Step {
    Step::Send(format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    ))
}

/// A whole streamed answer of `pieces` of text.
pub fn streamed_text(pieces: &[&str]) -> Reply {
    let mut steps: Vec<Step> = pieces.iter().map(|p| text_chunk(p)).collect();
    steps.push(finish("stop"));
    Reply::Stream(steps)
}

/// A non-streamed answer with `content`.
pub fn completion(content: &str) -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"id": "c1", "object": "chat.completion", "model": "test",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}]}),
        retry_after: None,
    }
}

/// An OpenAI-style error answer.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::Json {
        status,
        body: json!({"error": {"message": message, "type": "invalid_request_error"}}),
        retry_after: None,
    }
}
