//! Alerting: rules evaluated on closed windows, in packet time.
//!
//! - [`rule`]: `alerter.rules` and `alerter.notifiers` from the config,
//!   checked against the configured tasks ([`Rules::from_config`]).
//! - [`state`]: the state machine — each (rule, key) instance moves
//!   inactive → pending → firing → resolved; one notice when it fires, one
//!   when it resolves, reminders only per `repeat_interval` ([`Book`]).
//! - [`observe`]: what a window says about a rule (in memory), and
//!   [`stored`]: the same read back from a store, with the watermark that
//!   says which windows are closed.
//! - [`sink`]: in-process alerting in front of a store's sink (`analyze`,
//!   `run`).
//! - [`notify`]: webhook and email notifiers behind a queue that never
//!   blocks the caller, with retries and failure counts.
//!
//! ```
//! use netspectra_alert::{Book, Observation, Rules};
//! use netspectra_model::config::Config;
//! use netspectra_model::task::configured_tasks;
//!
//! let config = Config::from_yaml(
//!     "alerter:\n  rules:\n    - {name: big, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 1000}\n",
//!     &|_| None,
//! ).unwrap();
//! let rules = Rules::from_config(&config, &configured_tasks(&config)).unwrap();
//! let mut book = Book::default();
//! let window = Observation {
//!     window_start: 0,
//!     window_end: 10_000_000_000,
//!     holding: vec![(r#"{"SrcIP":"10.0.0.1"}"#.into(), 5000.0)],
//!     partial: false,
//! };
//! let notices = book.observe(&rules.rules[0], &window);
//! assert_eq!(notices[0].alert.state, "firing");
//! ```

pub mod notify;
pub mod observe;
pub mod rule;
pub mod sink;
pub mod state;
pub mod stored;

pub use notify::{Analysis, Dispatcher, Enrichment, Outbox, Retry};
pub use rule::{Rule, RuleError, Rules};
pub use sink::AlertingSink;
pub use state::{Book, Notice, Observation};
