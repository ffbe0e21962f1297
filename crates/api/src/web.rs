//! The built-in web dashboard: static assets compiled into the binary
//! (`crates/api/web/`), served at `/` with no CDN and no build step. The
//! page itself reads only the public `/api/v1`; this module adds
//! `/ui/config.json`, which tells the page what the server offers (whether
//! a token is needed, whether alerting and the AI analyst are there) so
//! that it shows the login form or a view without first failing a request.
//!
//! The chart library is uPlot 1.6.32 (MIT, `web/vendor/uPlot.LICENSE`),
//! vendored as published.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// One embedded file: name under `/assets/`, content type, bytes.
type Asset = (&'static str, &'static str, &'static [u8]);

/// The page's assets (the page itself is [`INDEX`]).
const ASSETS: &[Asset] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.LICENSE"),
    ),
];

/// The dashboard's single page.
const INDEX: &str = include_str!("../web/index.html");

/// Everything from this origin only: no inline script, no framing, no
/// third-party connection (a token in the page cannot be sent elsewhere).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the server offers, for the page.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// A bearer token is required: the page asks for it first.
    pub token_required: bool,
    /// `/api/v1/alerts` is served: the Alerts view is shown.
    pub alerts: bool,
    /// The AI analyst answers: the Ask view is shown.
    pub analyst: bool,
}

/// The dashboard's routes, open (the page holds no data; every data
/// request it makes goes through the API's token check).
pub fn routes<S: Clone + Send + Sync + 'static>(features: Features) -> Router<S> {
    let config = json!({
        "token_required": features.token_required,
        "alerts": features.alerts,
        "analyst": features.analyst,
    });
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{name}", get(asset))
        .route(
            "/ui/config.json",
            get(move || {
                let config = config.clone();
                async move { secure(Json(config).into_response()) }
            }),
        )
}

/// Adds the headers every dashboard answer carries.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    secure(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, kind, body)) => secure(([(header::CONTENT_TYPE, *kind)], *body).into_response()),
        None => crate::ApiError::NotFound(format!("no dashboard asset `{name}`")).into_response(),
    }
}

/// The names served under `/assets/` (tests fetch each one).
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(n, ..)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_only_embedded_assets() {
        for cap in INDEX.split("assets/").skip(1) {
            let name = cap.split('"').next().unwrap();
            assert!(asset_names().any(|n| n == name), "{name} is not embedded");
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}
