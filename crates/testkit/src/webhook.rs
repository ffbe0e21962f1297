//! A real HTTP server receiving webhooks: it answers each POST with a
//! chosen status and keeps the bodies, so a test sees exactly what a
//! receiver on the network would.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook receiver on 127.0.0.1; its thread ends with the process.
pub struct WebhookReceiver {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    status: Arc<AtomicU16>,
}

impl WebhookReceiver {
    /// Starts answering POSTs with 200.
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (b, s) = (bodies.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &b, &s);
            }
        });
        WebhookReceiver {
            port,
            bodies,
            status,
        }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Answers from now on with `status` (e.g. 500 to make the sender retry).
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The bodies of the POSTs answered with 2xx, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until at least `n` bodies arrived (at most `timeout`).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.bodies();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(
    stream: std::net::TcpStream,
    bodies: &Mutex<Vec<String>>,
    status: &AtomicU16,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    while let Some(crate::http1::Request { body, .. }) = crate::http1::read_request(&mut reader)? {
        let code = status.load(Ordering::SeqCst);
        if (200..300).contains(&code) {
            bodies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(String::from_utf8_lossy(&body).into_owned());
        }
        let mut out = &stream;
        write!(
            out,
            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
        )?;
        out.flush()?;
    }
    Ok(())
}
