//! The API server role: started over a store the analysis role wrote,
//! answers over HTTP, stops when the shutdown is triggered.

use netspectra_node::api::{ApiConfig, ApiServer};
use netspectra_node::Shutdown;
use netspectra_store::StoreUrl;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A plain HTTP/1.1 GET; returns the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn the_api_role_serves_the_store_until_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let (url, truth) = crate::stored_capture(dir.path(), 5_000, 3);

    let server = ApiServer::start(ApiConfig::loopback(StoreUrl::parse(&url).unwrap())).unwrap();
    assert!(server.describe().contains("HTTP on http://127.0.0.1:"));
    let http = server.http_addr.expect("HTTP bound");
    let shutdown = Shutdown::new();
    let serving = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || server.serve_until(&shutdown))
    };
    let (status, body) = get(http, "/api/v1/aggregate?task=per_src_ip");
    assert!(status.contains("200"), "{status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let summary = &v["summaries"][0];
    assert_eq!(
        summary["total_packets"].as_u64(),
        Some(truth.ip_packets),
        "{v}"
    );
    assert_eq!(
        summary["flow_count"].as_u64(),
        Some(truth.per_src.len() as u64)
    );

    shutdown.trigger();
    serving.join().unwrap().unwrap();
    assert!(
        TcpStream::connect(http).is_err(),
        "the listener is closed after the stop"
    );
}
