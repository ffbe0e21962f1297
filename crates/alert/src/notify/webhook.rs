//! Webhook notifier: POSTs the alert JSON (or Slack's `{"text": …}`).

use super::NotifyError;
use netspectra_model::alert::{alerts_json, AlertRecord};
use netspectra_model::redact::redact_urls;
use std::time::Duration;

/// Longest a webhook call may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One webhook endpoint.
pub struct Webhook {
    url: String,
    slack: bool,
}

impl Webhook {
    /// A webhook posting to `url`, as `format` (`json` or `slack`).
    pub fn new(url: &str, format: &str) -> Result<Webhook, NotifyError> {
        let url = url.trim().to_string();
        netspectra_http::check_url(&url).map_err(|e| {
            NotifyError::Setup(format!("webhook URL: {}", redact_urls(&e.to_string())))
        })?;
        Ok(Webhook {
            url,
            slack: format == "slack",
        })
    }

    /// Posts one group; any answer but 2xx is a failure.
    pub async fn send(&self, alerts: &[AlertRecord]) -> Result<(), NotifyError> {
        let body = if self.slack {
            serde_json::json!({ "text": super::text::slack(alerts) })
        } else {
            alerts_json(alerts)
        };
        let where_ = redact_urls(&self.url);
        let status = super::http::post_json(&self.url, body.to_string().into_bytes(), TIMEOUT)
            .await
            .map_err(|e| NotifyError::Send(format!("POST {where_}: {}", redact_urls(&e))))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(NotifyError::Send(format!("POST {where_}: HTTP {status}")))
        }
    }
}
