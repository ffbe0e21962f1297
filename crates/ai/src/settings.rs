//! The `ai` section resolved: which model server, which model, how long
//! to wait. No model configured means the offline analyst answers.

use crate::AiError;
use netspectra_model::config::AiConfig;
use std::time::Duration;

/// Environment variable with the model server's API key; it wins over
/// `ai.api_key`, so a key need not be written into a config file.
pub const API_KEY_ENV: &str = "NETSPECTRA_AI_API_KEY";
/// Model server when `ai.model` is set and `ai.base_url` is not.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// `ai.timeout` default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// `ai.max_tokens` default (the reference's streamed answers used 2048).
pub const DEFAULT_MAX_TOKENS: u32 = 2048;

/// A model server to talk to.
#[derive(Clone)]
pub struct Settings {
    /// Chat Completions endpoint (`…/chat/completions`).
    pub endpoint: String,
    /// Base URL as configured, for messages.
    pub base_url: String,
    /// Bearer key (None: the server needs none, e.g. a local Ollama).
    pub api_key: Option<String>,
    /// Model name.
    pub model: String,
    /// Longest wait for an answer to start, and between two pieces of a
    /// streamed answer.
    pub timeout: Duration,
    /// Token cap per answer.
    pub max_tokens: u32,
    /// Offer tools (false: stored context in the prompt instead).
    pub tools: bool,
}

impl std::fmt::Debug for Settings {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .field("tools", &self.tools)
            .finish()
    }
}

impl Settings {
    /// The model server of `ai` (None: no model configured, neither
    /// `ai.model` nor `ai.base_url` set).
    pub fn from_config(ai: &AiConfig) -> Result<Option<Settings>, AiError> {
        let model = ai.model.trim();
        let base = ai.base_url.trim();
        if model.is_empty() && base.is_empty() {
            return Ok(None);
        }
        if model.is_empty() {
            return Err(AiError::Config(format!(
                "ai.base_url is set ({base}) but ai.model is empty: name the model to ask"
            )));
        }
        let base = if base.is_empty() {
            DEFAULT_BASE_URL
        } else {
            base
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(AiError::Config(format!(
                "ai.base_url `{base}` must start with http:// or https://"
            )));
        }
        let set = |k: String| Some(k.trim().to_string()).filter(|k| !k.is_empty());
        let api_key = std::env::var(API_KEY_ENV)
            .ok()
            .and_then(set)
            .or_else(|| set(ai.api_key.clone()));
        let timeout = ai
            .timeout
            .map_or(DEFAULT_TIMEOUT, |d| Duration::from_nanos(d.0));
        if timeout.is_zero() {
            return Err(AiError::Config("ai.timeout must be more than 0".into()));
        }
        let max_tokens = ai.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(AiError::Config("ai.max_tokens must be more than 0".into()));
        }
        Ok(Some(Settings {
            endpoint: format!("{}/chat/completions", base.trim_end_matches('/')),
            base_url: base.to_string(),
            api_key,
            model: model.to_string(),
            timeout,
            max_tokens,
            tools: ai.tools.unwrap_or(true),
        }))
    }
}
