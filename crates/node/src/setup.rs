//! Wiring every role repeats: configuration, the result store and its run,
//! and what of the command line is recorded.

use crate::error::NodeError;
use crate::report::Report;
use netspectra_bus::BusConfig;
use netspectra_engine::{NullSink, TaskSpec, WindowSink};
use netspectra_model::config::{Config, StoreConfig};
use netspectra_store::{Commits, Store, StoreUrl};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The configuration file, or the built-in defaults without one.
pub fn load_config(path: Option<&Path>) -> Result<Config, NodeError> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// The store a role writes to: `--no-store` wins, then `--store`, then the
/// config's `store.url`; an empty URL means none.
/// A `store.url` built from an unset variable is an error (the default
/// store would be a silent surprise).
pub fn store_url(
    no_store: bool,
    flag: Option<&str>,
    config: &Config,
) -> Result<Option<String>, NodeError> {
    if no_store {
        return Ok(None);
    }
    if flag.is_none() {
        config.require_set("store.url")?;
        if !config.store.url.is_empty() {
            // A bad URL from the file names its key.
            if let Err(netspectra_store::StoreError::BadUrl { reason, .. }) =
                StoreUrl::parse(&config.store.url)
            {
                return Err(NodeError::invalid(format!(
                    "config error at `store.url`: {reason}"
                )));
            }
        }
    }
    let url = flag.map_or_else(|| config.store.url.clone(), str::to_string);
    Ok((!url.is_empty()).then_some(url))
}

/// The NATS URL a probe or engine uses: `--nats`, then the config's
/// `probe.nats_url`, then [`netspectra_bus::DEFAULT_URL`].
/// A `probe.nats_url` built from an unset variable is an error.
pub fn nats_url(flag: Option<&str>, config: &Config) -> Result<String, NodeError> {
    if flag.is_none() {
        config.require_set("probe.nats_url")?;
    }
    Ok(flag
        .map(str::to_string)
        .or_else(|| (!config.probe.nats_url.is_empty()).then(|| config.probe.nats_url.clone()))
        .unwrap_or_else(|| netspectra_bus::DEFAULT_URL.to_string()))
}

/// Bus settings given on the command line; each one given wins over the
/// config's `bus` section.
#[derive(Clone, Debug, Default)]
pub struct BusFlags {
    /// `--prefix`.
    pub prefix: Option<String>,
    /// `--shards`.
    pub shards: Option<u32>,
    /// `--jetstream` (given: on; absent: the config decides).
    pub jetstream: bool,
}

/// The bus a probe or engine uses: the config's `bus` section, overridden
/// by `flags`, on `url`, with connection name `name`.
pub fn bus_config(url: String, config: &Config, flags: &BusFlags, name: String) -> BusConfig {
    let mut bus = BusConfig::from_section(url, &config.bus);
    if let Some(p) = &flags.prefix {
        bus.prefix = p.clone();
    }
    if let Some(n) = flags.shards {
        bus.shards = n;
    }
    bus.jetstream |= flags.jetstream;
    bus.name = name;
    bus
}

/// Deletes what `store.retention` no longer keeps, saying how much.
pub(crate) fn apply_retention(store: &dyn Store, keep: Duration) -> Result<(), NodeError> {
    let started = std::time::Instant::now();
    let gone = store.apply_retention(keep)?;
    metrics::counter!("netspectra_store_retention_runs_total").increment(1);
    tracing::info!(
        message = "retention applied",
        keep_s = keep.as_secs(),
        removed = gone,
        elapsed_ms = started.elapsed().as_millis() as u64
    );
    Ok(())
}

/// A store with the run this process records in it (or no store at all).
pub struct RunStore {
    store: Option<Box<dyn Store>>,
    url: Option<String>,
    run_id: Option<i64>,
    /// Identities of the inputs ([`crate::identity`]), one per input, recorded
    /// with the run's outcome.
    identities: Vec<Option<Value>>,
}

impl RunStore {
    /// Opens the store at `url` (if any), applies `store.retention` (a
    /// local run writes alone), and begins a run; returns it with the sink
    /// to hand to the engine (a [`NullSink`] without a store).
    pub fn begin(
        url: Option<String>,
        settings: &StoreConfig,
        engine_id: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
        commits: Commits,
    ) -> Result<(RunStore, Box<dyn WindowSink>), NodeError> {
        let Some(url_text) = url else {
            let none = RunStore {
                store: None,
                url: None,
                run_id: None,
                identities: Vec::new(),
            };
            return Ok((none, Box::new(NullSink)));
        };
        let mut store = netspectra_store::open_spooled(
            &StoreUrl::parse(&url_text)?,
            engine_id,
            Path::new(&settings.spool_dir),
            commits,
        )?;
        if let Some(keep) = settings.retention {
            apply_retention(store.as_ref(), Duration::from_nanos(keep.0))?;
        }
        let command = recorded_command(std::env::args());
        let run_id = store.begin_run(engine_id, &command, inputs, tasks, window_ns)?;
        let sink = store.sink(run_id, engine_id)?;
        let run = RunStore {
            store: Some(store),
            // The report prints it: never with its password.
            url: Some(without_url_password(&url_text)),
            run_id: Some(run_id),
            identities: Vec::new(),
        };
        Ok((run, sink))
    }

    /// Store URL and run id, for the report.
    pub fn describe(&self) -> Option<(String, i64)> {
        self.url.clone().zip(self.run_id)
    }

    /// Marks a run that failed before anything was read (`failed`, no
    /// totals); a failure to record it is only logged.
    pub fn abandon(&mut self) {
        if let (Some(store), Some(id)) = (&mut self.store, self.run_id) {
            let empty = Value::Array(Vec::new());
            let none = Value::Object(serde_json::Map::new());
            if let Err(e) = store.finish_run(id, "failed", &empty, 0, 0, &none) {
                tracing::warn!(message = "cannot record the failed run", run_id = id, error = %e);
            }
        }
    }

    /// Records each input's identity ([`crate::identity::of_file`], in the
    /// order of the report's files) with the run's outcome.
    pub fn set_identities(&mut self, identities: Vec<Option<Value>>) {
        self.identities = identities;
    }

    /// Marks every earlier run of exactly this run's inputs (same canonical
    /// paths, sizes and fingerprints, finished `complete` or `damaged`)
    /// replaced; returns their ids. Call after [`RunStore::finish`]. Best
    /// effort: a store that cannot be asked (a ClickHouse server that is
    /// down; the run's rows wait in the spool) is a warning, and the run
    /// stands as stored.
    pub fn replace_same_inputs(&mut self) -> Vec<i64> {
        match self.try_replace_same_inputs() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(
                    message = "cannot replace earlier runs of the same input; if there are any, queries count them too (see `query runs`, `--run latest`)",
                    error = %e
                );
                Vec::new()
            }
        }
    }

    fn try_replace_same_inputs(&mut self) -> Result<Vec<i64>, NodeError> {
        let (Some(store), Some(own)) = (&mut self.store, self.run_id) else {
            return Ok(Vec::new());
        };
        let Some(mine) = self
            .identities
            .iter()
            .cloned()
            .collect::<Option<Vec<Value>>>()
            .and_then(|ids| crate::identity::of_recorded(&Value::Array(ids)))
        else {
            return Ok(Vec::new());
        };
        let mut replaced = Vec::new();
        for run in store.runs()? {
            let finished = matches!(run.status.as_str(), "complete" | "damaged");
            if run.run_id != own
                && finished
                && crate::identity::of_recorded(&run.inputs).as_ref() == Some(&mine)
            {
                store.replace_run(run.run_id)?;
                replaced.push(run.run_id);
            }
        }
        Ok(replaced)
    }

    /// Records the run's outcome and totals from its report.
    pub fn finish(&mut self, status: &str, report: &Report) -> Result<(), NodeError> {
        if let (Some(store), Some(id)) = (&mut self.store, self.run_id) {
            let mut files = serde_json::to_value(&report.files).unwrap_or_default();
            if let Some(list) = files.as_array_mut() {
                for (file, identity) in list.iter_mut().zip(&self.identities) {
                    if let (Some(file), Some(Value::Object(identity))) =
                        (file.as_object_mut(), identity)
                    {
                        file.extend(identity.clone());
                    }
                }
            }
            let decoded = serde_json::to_value(&report.decoded).unwrap_or_default();
            store.finish_run(id, status, &files, report.packets, report.bytes, &decoded)?;
        }
        Ok(())
    }
}

/// The command line as the store records it (and the query API's `runs`
/// shows it): the value of `--token` and any password in a URL
/// (`clickhouse://user:secret@host`, `nats://user:secret@host`) left out.
pub fn recorded_command(args: impl IntoIterator<Item = String>) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in args {
        if std::mem::take(&mut hide_next) {
            out.push("***".to_string());
        } else if arg == "--token" {
            hide_next = true;
            out.push(arg);
        } else if arg.starts_with("--token=") {
            out.push("--token=***".to_string());
        } else {
            out.push(without_url_password(&arg));
        }
    }
    out.join(" ")
}

/// `scheme://user:pass@rest` → `scheme://user:***@rest` (and a NATS token
/// `nats://token@host` → `nats://***@host`), for every URL in `arg`; other
/// text as is. See [`netspectra_model::redact`].
pub fn without_url_password(arg: &str) -> String {
    netspectra_model::redact::redact_urls(arg)
}

#[cfg(test)]
mod tests {
    use super::recorded_command;

    #[test]
    fn the_token_is_not_recorded() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            recorded_command(args(&[
                "netspectra",
                "analyze",
                "x.pcap",
                "--serve",
                "--token",
                "s3cret"
            ])),
            "netspectra analyze x.pcap --serve --token ***"
        );
        assert_eq!(
            recorded_command(args(&[
                "netspectra",
                "run",
                "--token=s3cret",
                "--iface",
                "lo"
            ])),
            "netspectra run --token=*** --iface lo"
        );
        assert_eq!(
            recorded_command(args(&[
                "netspectra",
                "engine",
                "--store=clickhouse://ns:p@ss:w0rd@db:8123/ns",
                "--nats",
                "nats://a:b@n:4222",
                "--store",
                "clickhouse://db:8123/x@y"
            ])),
            "netspectra engine --store=clickhouse://ns:***@db:8123/ns --nats nats://a:***@n:4222 --store clickhouse://db:8123/x@y"
        );
    }
}
