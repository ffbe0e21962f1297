//! `netspectra ask QUESTION`: the AI analyst's answer, streamed to the
//! terminal as it is written. It answers from a store directly (the
//! analyst runs here, with the config's `ai` section: a model, or the
//! offline analyst), or from a running API (`--api`: the server's analyst
//! answers `POST /api/v1/ask`).

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use netspectra_ai::sse::SseParser;
use netspectra_api::analyst::{AskEvent, ToolCall};
use netspectra_api::Limits;
use netspectra_node::setup;
use netspectra_store::StoreUrl;
use serde_json::{json, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `netspectra ask` (**contract**: the question, `--config`,
/// `--store`, `--api`, `--format`).
#[derive(Args)]
pub struct AskArgs {
    /// The question, e.g. `who is scanning?` (several words are joined).
    #[arg(value_name = "QUESTION", required = true)]
    question: Vec<String>,
    /// YAML configuration: its `ai` section picks the model (none: the
    /// built-in offline analyst), its `store.url` the store.
    #[arg(long, value_name = "F")]
    config: Option<PathBuf>,
    /// Store to answer from (default: config `store.url`, `sqlite:netspectra.db`).
    #[arg(long, value_name = "URL", conflicts_with = "api")]
    store: Option<String>,
    /// Ask a running API's analyst instead (`http://host:8080`).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Bearer token for `--api` (default: env NETSPECTRA_API_TOKEN).
    #[arg(long, value_name = "T", requires = "api")]
    token: Option<String>,
    /// Output: the answer as it streams, or at the end
    /// `{"answer": …, "tool_calls": [{"name", "arguments"}]}`.
    #[arg(long, value_enum, default_value_t = AskFormat::Text)]
    format: AskFormat,
}

/// How the answer is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AskFormat {
    Text,
    Json,
}

/// Connecting to an API; the answer itself may take minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `netspectra ask`.
pub fn run(args: AskArgs) -> anyhow::Result<crate::Outcome> {
    let question = args.question.join(" ").trim().to_string();
    if question.is_empty() {
        bail!("the question is empty");
    }
    let mut printer = Printer::new(args.format);
    let outcome = match &args.api {
        Some(api) => from_api(api, args.token.clone(), &question, &mut printer),
        None => from_store(&args, &question, &mut printer),
    };
    printer.finish();
    outcome?;
    Ok(crate::Outcome::Clean)
}

/// The analyst runs here, over the store.
fn from_store(args: &AskArgs, question: &str, printer: &mut Printer) -> anyhow::Result<()> {
    let config = setup::load_config(args.config.as_deref())?;
    let Some(store) = setup::store_url(false, args.store.as_deref(), &config)? else {
        bail!("no store to ask about: pass --store URL (or set `store.url` in the config)");
    };
    let url = StoreUrl::parse(&store)?;
    if let StoreUrl::Sqlite(path) = &url {
        if !path.exists() {
            bail!(
                "no store at {}: analyse a capture first (`netspectra analyze FILE`), or pass --store / --api",
                path.display()
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let analyst = netspectra_node::api::analyst(&url, &config.ai, Limits::default())?;
        let mut events = analyst.ask(question.to_string());
        while let Some(event) = events.recv().await {
            if printer.event(event)? {
                return Ok(());
            }
        }
        bail!("the analyst stopped without an answer")
    })
}

/// A running API's analyst answers (`POST /api/v1/ask`, read as it streams).
fn from_api(
    api: &str,
    token: Option<String>,
    question: &str,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let base = crate::query::base_url(api)?;
    let url = format!("{base}/api/v1/ask");
    let token = token
        .or_else(|| std::env::var(netspectra_node::api::TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(None)
        .build()
        .context("cannot set up the HTTP client")?;
    let mut request = client.post(&url).json(&json!({ "question": question }));
    if let Some(t) = &token {
        request = request.bearer_auth(t);
    }
    let mut answer = request
        .send()
        .with_context(|| format!("cannot reach the API at {base}"))?;
    if !answer.status().is_success() {
        let status = answer.status().as_u16();
        let mut body = Vec::new();
        let _ = answer.by_ref().take(64 << 10).read_to_end(&mut body);
        return Err(crate::query::failure(status, &body, &url, token.is_some()));
    }
    let mut parser = SseParser::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = answer
            .read(&mut buf)
            .with_context(|| format!("reading the answer from {url}"))?;
        let events = if n == 0 {
            parser.finish()?.into_iter().collect()
        } else {
            parser.push(&buf[..n])?
        };
        for e in events {
            let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
            if let Some(event) = AskEvent::from_sse(&e.event, &data) {
                if printer.event(event)? {
                    return Ok(());
                }
            }
        }
        if n == 0 {
            bail!("the API's answer ended before it was complete");
        }
    }
}

/// Prints the events of an answer.
struct Printer {
    format: AskFormat,
    spinner: Option<indicatif::ProgressBar>,
    tools_on_stderr: bool,
}

impl Printer {
    fn new(format: AskFormat) -> Printer {
        let interactive = std::io::stderr().is_terminal();
        let spinner = (format == AskFormat::Text && interactive).then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message("thinking…");
            s.enable_steady_tick(Duration::from_millis(100));
            s
        });
        Printer {
            format,
            spinner,
            tools_on_stderr: interactive,
        }
    }

    /// Handles one event; true when the answer is over. A failed answer
    /// is an error (after whatever text already streamed).
    fn event(&mut self, event: AskEvent) -> anyhow::Result<bool> {
        match event {
            AskEvent::ToolCall(call) => {
                if let Some(s) = &self.spinner {
                    s.set_message(format!("querying {}", printable(&call_text(&call))));
                } else if self.tools_on_stderr && self.format == AskFormat::Text {
                    eprintln!("→ {}", printable(&call_text(&call)));
                }
            }
            AskEvent::Delta(text) => {
                if self.format == AskFormat::Text {
                    self.finish();
                    let mut out = std::io::stdout().lock();
                    out.write_all(printable(&text).as_bytes())?;
                    out.flush()?;
                }
            }
            AskEvent::Done { answer, tool_calls } => {
                self.finish();
                match self.format {
                    AskFormat::Text => println!(),
                    AskFormat::Json => println!(
                        "{}",
                        json!({
                            "answer": answer,
                            "tool_calls": tool_calls.iter().map(ToolCall::to_json).collect::<Vec<_>>(),
                        })
                    ),
                }
                return Ok(true);
            }
            AskEvent::Failed(message) => {
                self.finish();
                if self.format == AskFormat::Text {
                    println!();
                }
                bail!("the analyst could not answer: {}", printable(&message));
            }
        }
        Ok(false)
    }

    /// Clears the spinner (before the first text, and at the end).
    fn finish(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
    }
}

/// Text as it may reach a terminal: control characters (escape sequences
/// that could move the cursor, retitle the window or hide text) dropped,
/// line breaks and tabs kept. A model's answer is not trusted to be text.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

/// `top(task=per_src_ip, by=bytes)`.
fn call_text(call: &ToolCall) -> String {
    let args: Vec<String> = call
        .arguments
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("{}({})", call.name, args.join(", "))
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_never_reach_the_terminal() {
        assert_eq!(
            printable("ok \u{1b}]0;owned\u{7}\u{1b}[2Jdone\n\tnext\r"),
            "ok ]0;owned[2Jdone\n\tnext"
        );
    }
}
