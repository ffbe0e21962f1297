//! One webhook POST (`netspectra-http`: hyper over rustls for https).

use std::time::Duration;

/// Posts `body` (JSON) to `url`; returns the answer's status code.
pub async fn post_json(url: &str, body: Vec<u8>, timeout: Duration) -> Result<u16, String> {
    let post = async {
        netspectra_http::request("POST", url, &[("content-type", "application/json")], body)
            .await
            .map(|answer| answer.status)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, post)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
