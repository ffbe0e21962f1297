//! Configuration: one YAML file drives every deployment; every key is optional.
//!
//! Loading goes YAML → tree → `${VAR}` / `${VAR:-default}` expansion inside
//! string values only (an unset variable is empty, as in Go2NetSpectra, and
//! a warning; a role that needs the value refuses it, [`Config::require_set`])
//! → typed structs with unknown keys rejected. Errors name
//! the key path (`aggregator.exact.tasks[0].key[1]`) and say what is allowed.
//! Go2NetSpectra's `config.yaml` loads as is: its sections and keys (including
//! the misspelt `size_thereshold`) are accepted; the ones a NetSpectra role
//! does not use yet are kept for the roles that will.

use crate::dimension::Dimension;
use crate::time::{parse_duration_ns, NS_PER_SEC};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key is unknown or its value is not allowed.
    #[error("config error at `{key}`: {message}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A duration written as text (`60s`, `720h`), held in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationText(pub u64);

impl DurationText {
    /// Whole seconds, for display.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NS_PER_SEC as f64
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as `60s`, `5m` or `720h`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DurationText, E> {
                parse_duration_ns(s).map(DurationText).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<DurationText, E> {
                if n == 0 {
                    Ok(DurationText(0))
                } else {
                    Err(E::custom(format!(
                        "invalid duration `{n}`: a number needs a unit, e.g. `{n}s`"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, written as a number or with a unit (`10GiB`, `512MiB`,
/// `1GB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `10GiB`, `512 MiB`, `1GB`, `4096`.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid size `{text}`: expected e.g. `10GiB`"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mib" => 1024.0 * 1024.0,
            "g" | "gb" => 1e9,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tb" => 1e12,
            "tib" => 1024.0f64.powi(4),
            _ => return Err(format!("invalid size `{text}`: unknown unit `{unit}` (B, KiB, MiB, GiB, TiB, or KB, MB, GB, TB)")),
        };
        Ok(ByteSize((n * mult) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as `10GiB` or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// `bus`: how probes and engines meet on NATS (NetSpectra's own section;
/// every key has a flag of the same name that overrides it). Probes and
/// engines must agree on `prefix`, `shards` and `jetstream`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSection {
    /// Subject prefix: batches go to `<prefix>.packets.<shard>`.
    pub prefix: String,
    /// Number of shards.
    pub shards: u32,
    /// At-least-once delivery through a JetStream stream.
    pub jetstream: bool,
    /// Go2NetSpectra's one-packet subject engines also read (empty: none).
    pub interop_subject: String,
    /// The JetStream stream forgets messages older than this. Default `24h`.
    pub stream_max_age: DurationText,
    /// ... and drops its oldest messages beyond this size. Default `10GiB`.
    pub stream_max_bytes: ByteSize,
    /// JetStream: how long before an unacknowledged batch is redelivered.
    /// Default `30s`.
    pub ack_wait: DurationText,
    /// An engine silent for this long is taken for dead and its shards
    /// move. Default `4s`.
    pub member_ttl: DurationText,
}

impl Default for BusSection {
    fn default() -> Self {
        BusSection {
            prefix: "netspectra".into(),
            shards: 16,
            jetstream: false,
            interop_subject: String::new(),
            stream_max_age: DurationText(24 * 3600 * NS_PER_SEC),
            stream_max_bytes: ByteSize(10 * 1024 * 1024 * 1024),
            ack_wait: DurationText(30 * NS_PER_SEC),
            member_ttl: DurationText(4 * NS_PER_SEC),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `${VAR}` references to variables that are not set, in file order
    /// (filled while loading; see [`Config::warnings`] and
    /// [`Config::require_set`]).
    #[serde(skip)]
    pub unset_env: Vec<UnsetVar>,
    /// Tasks, windows and workers.
    pub aggregator: AggregatorConfig,
    /// Where snapshots go.
    pub store: StoreConfig,
    /// Query API listeners (Go2NetSpectra `api`).
    pub api: ApiConfig,
    /// LLM analyst (Go2NetSpectra `ai`).
    pub ai: AiConfig,
    /// Probe and bus (Go2NetSpectra `probe`).
    pub probe: ProbeConfig,
    /// Bus layout and limits (NetSpectra's own).
    pub bus: BusSection,
    /// Alert rules (Go2NetSpectra `alerter`).
    pub alerter: AlerterConfig,
    /// Mail relay for alerts (Go2NetSpectra `smtp`).
    pub smtp: SmtpConfig,
}

/// A `${VAR}` whose variable is not set: it expanded to an empty string
/// (as Go2NetSpectra's `os.ExpandEnv` does), and a value that was only that
/// reference is left out, so the key's default applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsetVar {
    /// The variable.
    pub name: String,
    /// The key whose value referenced it (`smtp.port`).
    pub key: String,
}

/// `aggregator`: what is counted and how time is cut.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Task groups that run, in Go2NetSpectra's terms (`exact`, `sketch`).
    pub types: Vec<TaskGroup>,
    /// Measurement period after which sketches reset. Default `60s`.
    pub period: DurationText,
    /// Length of the windows that rows are cut into (each row a delta of one
    /// window). Default: the smallest enabled writer interval, else `60s`.
    pub snapshot_interval: Option<DurationText>,
    /// Engine workers; 0 = one per core.
    pub num_workers: usize,
    /// How long after its end a window of live traffic is closed when no
    /// later packet arrives (an idle link still gets its windows stored).
    /// Default `2s`.
    pub grace: DurationText,
    /// Go2NetSpectra's channel size: packets buffered towards each worker.
    pub size_of_packet_channel: Option<usize>,
    /// Exact (hash-map) tasks.
    pub exact: ExactGroupConfig,
    /// Sketch tasks.
    pub sketch: SketchGroupConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            types: vec![TaskGroup::Exact, TaskGroup::Sketch],
            period: DurationText(60 * NS_PER_SEC),
            snapshot_interval: None,
            num_workers: 0,
            grace: DurationText(2 * NS_PER_SEC),
            size_of_packet_channel: None,
            exact: ExactGroupConfig::default(),
            sketch: SketchGroupConfig::default(),
        }
    }
}

/// A task group name in `aggregator.types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskGroup {
    /// Exact hash-map accounting.
    Exact,
    /// Sketch estimators.
    Sketch,
}

/// `aggregator.exact`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExactGroupConfig {
    /// Go2NetSpectra writer definitions (their intervals set the default window).
    pub writers: Vec<WriterConfig>,
    /// The exact tasks; absent = the built-in defaults.
    pub tasks: Vec<ExactTaskConfig>,
}

impl Default for ExactGroupConfig {
    fn default() -> Self {
        let task = |name: &str, key: &[Dimension]| ExactTaskConfig {
            name: name.to_string(),
            key: key.to_vec(),
            num_shards: None,
        };
        ExactGroupConfig {
            writers: Vec::new(),
            tasks: vec![
                task("per_src_ip", &[Dimension::SrcIp]),
                task("per_dst_ip", &[Dimension::DstIp]),
                task(
                    "per_flow",
                    &[
                        Dimension::SrcIp,
                        Dimension::DstIp,
                        Dimension::SrcPort,
                        Dimension::DstPort,
                        Dimension::Protocol,
                    ],
                ),
            ],
        }
    }
}

/// One exact task: a name and the dimensions of its key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactTaskConfig {
    /// Unique task name (also the store's task column).
    pub name: String,
    /// Key dimensions (`key`, or Go2NetSpectra's `key_fields` / `dimensions`).
    #[serde(alias = "key_fields", alias = "dimensions")]
    pub key: Vec<Dimension>,
    /// Go2NetSpectra's lock-shard count; NetSpectra shards by worker instead.
    pub num_shards: Option<u32>,
}

/// `aggregator.sketch`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SketchGroupConfig {
    /// Go2NetSpectra writer definitions.
    pub writers: Vec<WriterConfig>,
    /// Sketch tasks; absent = the built-in defaults.
    pub tasks: Vec<SketchTaskConfig>,
}

impl Default for SketchGroupConfig {
    fn default() -> Self {
        let task = |name: &str, algorithm, element: Vec<Dimension>| SketchTaskConfig {
            name: name.to_string(),
            algorithm: Some(algorithm),
            key: vec![Dimension::SrcIp],
            element_key: element,
            ..SketchTaskConfig::default()
        };
        SketchGroupConfig {
            writers: Vec::new(),
            tasks: vec![
                task("per_src_ip_hh", SketchAlgorithm::CountMin, vec![]),
                task(
                    "per_src_ip_spread",
                    SketchAlgorithm::SuperSpread,
                    vec![Dimension::DstIp],
                ),
            ],
        }
    }
}

/// Which estimator a sketch task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SketchAlgorithm {
    /// Classic Count-Min with top-k candidates: heavy hitters by packets and bytes.
    #[serde(alias = "count-min", alias = "count_min")]
    CountMin,
    /// Go2NetSpectra's majority-vote bucket sketch (`skt_type: 0`).
    #[serde(alias = "heavy", alias = "heavybucket")]
    Hh,
    /// Distinct elements per key (`skt_type: 1`).
    #[serde(alias = "super_spread", alias = "super-spread")]
    SuperSpread,
}

impl SketchAlgorithm {
    /// Name used in output and the store.
    pub fn name(self) -> &'static str {
        match self {
            SketchAlgorithm::CountMin => "countmin",
            SketchAlgorithm::Hh => "hh",
            SketchAlgorithm::SuperSpread => "superspread",
        }
    }
}

/// One sketch task. Every parameter is optional; defaults suit ~1 M keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SketchTaskConfig {
    /// Unique task name.
    pub name: String,
    /// `countmin`, `hh` or `superspread` (or Go2NetSpectra's `skt_type`).
    pub algorithm: Option<SketchAlgorithm>,
    /// Go2NetSpectra's algorithm code: 0 = `hh`, 1 = `superspread`.
    pub skt_type: Option<u8>,
    /// Key dimensions (`key`, or Go2NetSpectra's `flow_fields`).
    #[serde(alias = "flow_fields")]
    pub key: Vec<Dimension>,
    /// Element dimensions whose distinct values SuperSpread counts per key
    /// (`elementkey`, `element_fields`).
    #[serde(alias = "elementkey", alias = "element_fields", alias = "element")]
    pub element_key: Vec<Dimension>,
    /// Counters (or buckets) per row.
    pub width: Option<usize>,
    /// Rows.
    pub depth: Option<usize>,
    /// Count-Min conservative update (default on).
    pub conservative: Option<bool>,
    /// Count-Min candidates tracked per worker for the heavy-hitter list.
    pub top_k: Option<usize>,
    /// SuperSpread registers per bucket.
    pub m: Option<usize>,
    /// SuperSpread register bits.
    pub size: Option<u32>,
    /// SuperSpread sampling base (must be 0.5).
    pub base: Option<f64>,
    /// SuperSpread decay base.
    pub b: Option<f64>,
    /// Minimum packets for a heavy hitter; SuperSpread: minimum distinct
    /// elements (Go2NetSpectra `count_thereshold`).
    #[serde(alias = "count_thereshold")]
    pub count_threshold: Option<u64>,
    /// Minimum bytes for a heavy hitter (Go2NetSpectra `size_thereshold`).
    #[serde(alias = "size_thereshold")]
    pub size_threshold: Option<u64>,
    /// SuperSpread: minimum distinct elements to report (same as `count_threshold`).
    pub threshold: Option<u64>,
    /// Heavy hitters listed per measure (default 20).
    pub report: Option<usize>,
    /// Hash seed (same seed, same results).
    pub seed: Option<u64>,
}

impl SketchTaskConfig {
    /// The algorithm, from `algorithm` or `skt_type` (validated at load).
    pub fn resolved_algorithm(&self) -> SketchAlgorithm {
        match (self.algorithm, self.skt_type) {
            (Some(a), _) => a,
            (None, Some(1)) => SketchAlgorithm::SuperSpread,
            _ => SketchAlgorithm::Hh,
        }
    }

    fn validate(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let algorithm = match (self.algorithm, self.skt_type) {
            (None, None) => {
                return Err(invalid(
                    at("algorithm"),
                    "set `algorithm: countmin | hh | superspread` (or Go2NetSpectra's `skt_type: 0 | 1`)",
                ))
            }
            (_, Some(t)) if t > 1 => {
                return Err(invalid(at("skt_type"), format!("{t} is not allowed; 0 = hh, 1 = superspread")))
            }
            (Some(a), Some(t)) if (t == 1) != (a == SketchAlgorithm::SuperSpread) => {
                return Err(invalid(at("skt_type"), "contradicts `algorithm`; set only one of them"))
            }
            _ => self.resolved_algorithm(),
        };
        let range = |field: &str, v: Option<usize>, lo: usize, hi: usize| match v {
            Some(v) if !(lo..=hi).contains(&v) => Err(invalid(
                at(field),
                format!("{v} is out of range; allowed {lo} to {hi}"),
            )),
            _ => Ok(()),
        };
        range("width", self.width, 1, 1 << 24)?;
        range("depth", self.depth, 1, 16)?;
        range("top_k", self.top_k, 1, 65_536)?;
        range("report", self.report, 1, 100_000)?;
        range("m", self.m, 16, 65_536)?;
        range("size", self.size.map(|s| s as usize), 1, 6)?;
        if let Some(base) = self.base {
            if base != 0.5 {
                return Err(invalid(
                    at("base"),
                    format!("{base} is not supported; SuperSpread's sampler needs 0.5"),
                ));
            }
        }
        if let Some(b) = self.b {
            if !(b.is_finite() && b >= 1.0) {
                return Err(invalid(
                    at("b"),
                    format!("{b} is not allowed; the decay base must be ≥ 1 (default 1.08)"),
                ));
            }
        }
        if algorithm == SketchAlgorithm::SuperSpread && self.element_key.is_empty() {
            return Err(invalid(
                at("element_key"),
                "SuperSpread counts distinct elements per key: set `element_key`, e.g. [DstIP]",
            ));
        }
        Ok(())
    }
}

/// A Go2NetSpectra writer definition.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// `clickhouse`, `gob` or `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the writer is on.
    pub enabled: bool,
    /// How often it flushes.
    pub snapshot_interval: Option<DurationText>,
    /// Text writer settings.
    pub text: Option<PathConfig>,
    /// Gob writer settings.
    pub gob: Option<PathConfig>,
    /// ClickHouse writer settings.
    pub clickhouse: Option<ClickHouseConfig>,
}

/// A writer's output folder.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathConfig {
    /// Root folder.
    pub root_path: String,
}

/// ClickHouse connection settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
    /// ClickHouse Cloud (TLS).
    pub cloud: bool,
}

/// `store`: where snapshots are written.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:PATH` or a bare path; empty string = no store.
    pub url: String,
    /// Where a ClickHouse store keeps what the server cannot take yet
    /// (`<spool_dir>/<database>/<writer id>`). Default `netspectra-spool`.
    pub spool_dir: String,
    /// Rows older than this are deleted (by one leader per cluster);
    /// unset: kept for ever.
    pub retention: Option<DurationText>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite:netspectra.db".to_string(),
            spool_dir: "netspectra-spool".to_string(),
            retention: None,
        }
    }
}

/// `api` (Go2NetSpectra shape).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// gRPC listen address.
    pub grpc_listen_addr: String,
    /// HTTP listen address.
    pub http_listen_addr: String,
    /// Bearer token both protocols require (empty: none). Use `${VAR}` to
    /// keep it out of the file.
    pub token: String,
}

/// `ai` (Go2NetSpectra shape). Its `Debug` never shows the key.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    /// Provider label.
    pub provider: String,
    /// API key.
    pub api_key: String,
    /// Model name.
    pub model: String,
    /// OpenAI-compatible base URL (e.g. `https://api.openai.com/v1`,
    /// Gemini's `…/v1beta/openai/`, `http://localhost:11434/v1` for Ollama).
    pub base_url: String,
    /// gRPC listen address of the AI role.
    pub grpc_listen_addr: String,
    /// Longest wait for the model server: for an answer to start, and
    /// between two pieces of a streamed answer. Default `60s`.
    pub timeout: Option<DurationText>,
    /// Most tokens one model answer may take. Default 2048.
    pub max_tokens: Option<u32>,
    /// Offer the query operations as tools (default true); false for a
    /// model without tool calls: the stored context then goes into the
    /// prompt instead.
    pub tools: Option<bool>,
}

impl std::fmt::Debug for AiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiConfig")
            .field("provider", &self.provider)
            .field("api_key", &(!self.api_key.is_empty()).then_some("<set>"))
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("grpc_listen_addr", &self.grpc_listen_addr)
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .field("tools", &self.tools)
            .finish()
    }
}

/// `probe` (Go2NetSpectra shape).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// Subject packets are published on.
    pub subject: String,
    /// Local persistence of captured packets.
    pub persistence: PersistenceConfig,
}

/// `probe.persistence` (Go2NetSpectra shape).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersistenceConfig {
    /// On or off.
    pub enabled: bool,
    /// Output folder.
    pub path: String,
    /// Writer count (NetSpectra always uses one writer per file).
    pub num_workers: i64,
    /// Queue length.
    pub channel_buffer_size: i64,
    /// `text`, `gob` or `pcap`.
    pub encoding: String,
}

/// `alerter` (Go2NetSpectra shape).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlerterConfig {
    /// On or off.
    pub enabled: bool,
    /// How often rules are evaluated.
    pub check_interval: Option<DurationText>,
    /// LLM enrichment.
    pub ai_analysis: AiAnalysisConfig,
    /// Alert rules.
    pub rules: Vec<AlertRuleConfig>,
    /// Where notifications go (NetSpectra addition); none configured means
    /// email when `smtp.host` is set.
    pub notifiers: Vec<NotifierConfig>,
}

/// `alerter.notifiers[]`: one destination for alert notifications.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    /// Name rules refer to in their `notifiers` list.
    pub name: String,
    /// `email` (through the `smtp` section) or `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Webhook address.
    pub url: String,
    /// Webhook body: `json` (the alert JSON, default) or `slack`.
    pub format: String,
}

/// `alerter.ai_analysis`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiAnalysisConfig {
    /// On or off.
    pub enabled: bool,
    /// Address of the AI role.
    pub service_addr: String,
    /// Longest the analysis of one notification may take; past it the
    /// notification goes out without analysis (a slow model must not hold
    /// every later notification back). Default `60s`.
    pub timeout: DurationText,
}

/// Default `alerter.ai_analysis.timeout`.
pub const DEFAULT_AI_ANALYSIS_TIMEOUT_NS: u64 = 60 * NS_PER_SEC;

impl Default for AiAnalysisConfig {
    fn default() -> Self {
        AiAnalysisConfig {
            enabled: false,
            service_addr: String::new(),
            timeout: DurationText(DEFAULT_AI_ANALYSIS_TIMEOUT_NS),
        }
    }
}

/// One alert rule (Go2NetSpectra shape).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertRuleConfig {
    /// Rule name.
    pub name: String,
    /// Task the rule watches.
    pub task_name: String,
    /// Metric name.
    pub metric: String,
    /// Comparison operator.
    pub operator: String,
    /// Threshold.
    pub threshold: f64,
    /// How long (packet time) the condition must hold before firing.
    #[serde(rename = "for")]
    pub for_: Option<DurationText>,
    /// Re-notify a still-firing alert this often (unset or 0: never).
    pub repeat_interval: Option<DurationText>,
    /// `info`, `warning` (default) or `critical`.
    pub severity: String,
    /// Names of the notifiers to use; unset means all of them.
    pub notifiers: Option<Vec<String>>,
}

/// `smtp` (Go2NetSpectra shape). Its `Debug` never shows the password.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
    /// Sender.
    pub from: String,
    /// Recipients, comma separated.
    pub to: String,
    /// `none`, `starttls` or `tls`; unset: `tls` on port 465, `starttls`
    /// when a password is set, else `none`.
    pub tls: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &(!self.password.is_empty()).then_some("<set>"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Upper bound on `num_workers`: more threads than this only add overhead.
pub const MAX_WORKERS: usize = 1024;

impl Config {
    /// Reads, expands and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, &|name| std::env::var(name).ok()).map_err(|e| match e {
            ConfigError::Yaml { message, .. } => ConfigError::Yaml {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses YAML text, looking variables up with `env`.
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut tree: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: PathBuf::from("(inline text)"),
                message: e.to_string(),
            })?
        };
        if tree.is_null() {
            tree = Value::Object(Default::default());
        }
        let mut unset = Vec::new();
        expand_tree(&mut tree, &mut String::new(), env, &mut unset)?;
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            invalid(
                if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                e.into_inner().to_string(),
            )
        })?;
        config.validate()?;
        config.unset_env = unset;
        Ok(config)
    }

    /// What a user should hear about this configuration, one line each:
    /// every unset variable once (with the keys that use it), and
    /// Go2NetSpectra writers that NetSpectra does not run.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut names: Vec<&str> = self.unset_env.iter().map(|u| u.name.as_str()).collect();
        names.dedup();
        let mut seen = std::collections::HashSet::new();
        for name in names.into_iter().filter(|n| seen.insert(*n)) {
            let keys: Vec<&str> = self
                .unset_env
                .iter()
                .filter(|u| u.name == name)
                .map(|u| u.key.as_str())
                .collect();
            out.push(format!(
                "environment variable {name} is not set: {} left empty (default used); set it, or write ${{{name}:-default}}",
                keys.join(", ")
            ));
        }
        let groups = [
            ("exact", &self.aggregator.exact.writers),
            ("sketch", &self.aggregator.sketch.writers),
        ];
        for (group, writers) in groups {
            for (i, w) in writers.iter().enumerate() {
                if w.enabled && w.kind == "clickhouse" {
                    out.push(format!(
                        "aggregator.{group}.writers[{i}] (type clickhouse) is not used: NetSpectra writes every task to the store named by --store or store.url (now `{}`); to store in ClickHouse, set store.url: clickhouse://USER:PASSWORD@HOST:8123/DATABASE (the HTTP port)",
                        if self.store.url.is_empty() { "none" } else { self.store.url.as_str() }
                    ));
                } else if w.enabled {
                    out.push(format!(
                        "aggregator.{group}.writers[{i}] (type {}) is not used: NetSpectra writes to the store named by --store or store.url",
                        w.kind
                    ));
                }
            }
        }
        out
    }

    /// An error when `key` (or a key under it) referenced an unset
    /// variable: for the values a role cannot do without (its store URL,
    /// its API token, its NATS URL), where a silent default would be wrong.
    pub fn require_set(&self, key: &str) -> Result<(), ConfigError> {
        let under = |k: &str| {
            k == key
                || k.strip_prefix(key)
                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
        };
        match self.unset_env.iter().find(|u| under(&u.key)) {
            Some(u) => Err(invalid(
                u.key.clone(),
                format!(
                    "environment variable {} is not set, and this command needs the value",
                    u.name
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether a task group runs (`aggregator.types`).
    pub fn group_enabled(&self, group: TaskGroup) -> bool {
        self.aggregator.types.contains(&group)
    }

    /// Window length in ns: `snapshot_interval`, else the smallest enabled
    /// writer interval, else 60 s.
    pub fn window_ns(&self) -> u64 {
        let agg = &self.aggregator;
        agg.snapshot_interval.map(|d| d.0).unwrap_or_else(|| {
            agg.exact
                .writers
                .iter()
                .chain(&agg.sketch.writers)
                .filter(|w| w.enabled)
                .filter_map(|w| w.snapshot_interval)
                .map(|d| d.0)
                .filter(|&ns| ns > 0)
                .min()
                .unwrap_or(60 * NS_PER_SEC)
                .min(agg.period.0.max(1))
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bus = &self.bus;
        if !(1..=65536).contains(&bus.shards) {
            return Err(invalid("bus.shards", "must be between 1 and 65536"));
        }
        if bus.prefix.is_empty() || bus.prefix.contains(['*', '>', ' ']) {
            return Err(invalid(
                "bus.prefix",
                "must be a non-empty NATS subject token (no `*`, `>` or spaces)",
            ));
        }
        if bus.member_ttl.0 < NS_PER_SEC {
            return Err(invalid("bus.member_ttl", "must be at least `1s`"));
        }
        if self.alerter.ai_analysis.timeout.0 == 0 {
            return Err(invalid(
                "alerter.ai_analysis.timeout",
                "must be greater than 0, e.g. `60s`",
            ));
        }
        if self
            .store
            .retention
            .is_some_and(|r| r.0 < 3600 * NS_PER_SEC)
        {
            return Err(invalid(
                "store.retention",
                "must be at least `1h` (rows are kept per day), e.g. `30d`",
            ));
        }
        let agg = &self.aggregator;
        if agg.period.0 == 0 {
            return Err(invalid(
                "aggregator.period",
                "must be greater than 0, e.g. `60s`",
            ));
        }
        if let Some(w) = agg.snapshot_interval {
            if w.0 == 0 || w.0 > agg.period.0 || !agg.period.0.is_multiple_of(w.0) {
                return Err(invalid(
                    "aggregator.snapshot_interval",
                    format!(
                        "must be greater than 0 and divide aggregator.period ({}s) evenly",
                        agg.period.as_secs_f64()
                    ),
                ));
            }
        }
        if agg.num_workers > MAX_WORKERS {
            return Err(invalid(
                "aggregator.num_workers",
                format!(
                    "{} is too many; allowed 0 (one per core) to {MAX_WORKERS}",
                    agg.num_workers
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in agg.exact.tasks.iter().enumerate() {
            let at = |field: &str| format!("aggregator.exact.tasks[{i}].{field}");
            check_task(&at, &t.name, &t.key, &mut names)?;
        }
        for (i, t) in agg.sketch.tasks.iter().enumerate() {
            let at = |field: &str| format!("aggregator.sketch.tasks[{i}].{field}");
            check_task(&at, &t.name, &t.key, &mut names)?;
            t.validate(&at)?;
        }
        Ok(())
    }
}

/// Checks what every task needs: a unique, non-empty name and a key of
/// distinct dimensions.
fn check_task<'a>(
    at: &dyn Fn(&str) -> String,
    name: &'a str,
    key: &[Dimension],
    names: &mut std::collections::HashSet<&'a str>,
) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(invalid(at("name"), "a task needs a non-empty name"));
    }
    if !names.insert(name) {
        return Err(invalid(
            at("name"),
            format!("task name `{name}` is used twice"),
        ));
    }
    if key.is_empty() {
        return Err(invalid(at("key"), "a task needs at least one dimension"));
    }
    for (j, d) in key.iter().enumerate() {
        if key[..j].contains(d) {
            return Err(invalid(at("key"), format!("dimension {d} appears twice")));
        }
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value of the tree
/// (never in keys). A string that is exactly one reference is re-read as a
/// YAML scalar, so `port: ${SMTP_PORT}` yields a number. An unset variable
/// without a default expands to an empty string and is recorded in `unset`;
/// a value that was only such a reference is removed (returns true), so
/// the key's default applies.
fn expand_tree(
    v: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<UnsetVar>,
) -> Result<bool, ConfigError> {
    match v {
        Value::String(s) => {
            if !s.contains("${") {
                return Ok(false);
            }
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let before = unset.len();
            let expanded = expand_str(s, env, &mut |name| {
                unset.push(UnsetVar {
                    name: name.to_string(),
                    key: path.clone(),
                })
            })
            .map_err(|m| invalid(path.clone(), m))?;
            if whole && unset.len() > before {
                return Ok(true);
            }
            *v = if whole {
                scalar(&expanded)
            } else {
                Value::String(expanded)
            };
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if expand_tree(item, path, env, unset)? {
                    *item = Value::String(String::new());
                }
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            let mut gone = Vec::new();
            for (k, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if expand_tree(item, path, env, unset)? {
                    gone.push(k.clone());
                }
                path.truncate(len);
            }
            for k in gone {
                map.remove(&k);
            }
        }
        _ => {}
    }
    Ok(false)
}

fn scalar(text: &str) -> Value {
    if let Ok(n) = text.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(f) = text.parse::<f64>() {
        return Value::from(f);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

fn expand_str(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
    unset: &mut dyn FnMut(&str),
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{body}}}` is not a variable reference; use ${{NAME}} or ${{NAME:-default}}"
            ));
        }
        match (env(name), default) {
            (Some(val), _) => out.push_str(&val),
            (None, Some(d)) => out.push_str(d),
            (None, None) => unset(name),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
