//! Webhook notifier: POSTs the alert JSON (or Slack's `{"text": …}`).

use super::NotifyError;
use netspectra_model::alert::{alerts_json, AlertRecord};
use netspectra_model::redact::redact_urls;
use std::time::Duration;

/// One webhook endpoint.
pub struct Webhook {
    url: String,
    slack: bool,
    client: reqwest::Client,
}

impl Webhook {
    /// A webhook posting to `url`, as `format` (`json` or `slack`).
    pub fn new(url: &str, format: &str) -> Result<Webhook, NotifyError> {
        super::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| NotifyError::Setup(format!("webhook client: {e}")))?;
        Ok(Webhook {
            url: url.trim().to_string(),
            slack: format == "slack",
            client,
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
        let answer = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                NotifyError::Send(format!("POST {where_}: {}", redact_urls(&e.to_string())))
            })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError::Send(format!("POST {where_}: HTTP {status}")))
        }
    }
}
