//! Wiring every role repeats: configuration, the result store and its run,
//! and the stop flag raised by SIGINT/SIGTERM.

use crate::report::{self, Report};
use anyhow::Context;
use netspectra_engine::{NullSink, TaskSpec, WindowSink};
use netspectra_model::config::Config;
use netspectra_store::{Store, StoreUrl};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The configuration file, or the built-in defaults without one.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}

/// The store a role writes to: `--no-store` wins, then `--store`, then the
/// config's `store.url`; an empty URL means none.
pub fn store_url(no_store: bool, flag: Option<&str>, config: &Config) -> Option<String> {
    if no_store {
        return None;
    }
    let url = flag.map_or_else(|| config.store.url.clone(), str::to_string);
    (!url.is_empty()).then_some(url)
}

/// A store with the run this process records in it (or no store at all).
pub struct RunStore {
    store: Option<Box<dyn Store>>,
    url: Option<String>,
    run_id: Option<i64>,
}

impl RunStore {
    /// Opens the store at `url` (if any) and begins a run; returns it with
    /// the sink to hand to the engine (a [`NullSink`] without a store).
    pub fn begin(
        url: Option<String>,
        engine_id: &str,
        inputs: &Value,
        tasks: &[TaskSpec],
        window_ns: u64,
    ) -> anyhow::Result<(RunStore, Box<dyn WindowSink>)> {
        let Some(url_text) = url else {
            let none = RunStore {
                store: None,
                url: None,
                run_id: None,
            };
            return Ok((none, Box::new(NullSink)));
        };
        let mut store = netspectra_store::open(&StoreUrl::parse(&url_text)?, engine_id)?;
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let run_id = store.begin_run(engine_id, &command, inputs, tasks, window_ns)?;
        let sink = store.sink(run_id, engine_id)?;
        let run = RunStore {
            store: Some(store),
            url: Some(url_text),
            run_id: Some(run_id),
        };
        Ok((run, sink))
    }

    /// Store URL and run id, for the report.
    pub fn describe(&self) -> Option<(String, i64)> {
        self.url.clone().zip(self.run_id)
    }

    /// Records the run's outcome and totals from its report.
    pub fn finish(&mut self, status: &str, report: &Report) -> anyhow::Result<()> {
        if let (Some(store), Some(id)) = (&mut self.store, self.run_id) {
            store.finish_run(
                id,
                status,
                &report::files_json(&report.files),
                report.packets,
                report.bytes,
                &serde_json::to_value(&report.decoded)?,
            )?;
        }
        Ok(())
    }
}

/// A flag raised by SIGINT or SIGTERM; a second signal exits at once
/// (status 1) in case the shutdown hangs.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }
    Ok(stop)
}
