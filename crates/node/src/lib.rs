//! NetSpectra's roles as library types. The `netspectra` binary only turns
//! flags and configuration into these structs, renders what they return and
//! maps errors to exit codes; tests drive the same types in-process.
//!
//! | role | type | what it wires |
//! |---|---|---|
//! | `analyze` | [`offline::Analysis`] | capture files → decode → engine → store |
//! | `run` | [`live::LiveRun`] | live capture → decode → engine → store (→ API) |
//! | `probe` | [`probe::Probe`] | capture → decode → batches → NATS |
//! | `engine` | [`engine::EngineRole`] | NATS → engine → store, acks after storage |
//! | `api` | [`api::ApiServer`] | store → query API (gRPC + HTTP/JSON) |
//! | `alert` | [`alerter::Alerter`] | store → rules → notifiers (one leader per cluster) |
//! | `ai` | [`ai::AiGateway`] | store → analyst → AI gRPC services |
//! | `bench` | [`bench::run`] | exact vs. sketches, engine throughput |
//!
//! Every long-running role has the same life cycle: `start(config)` opens
//! what it needs (capture, store, NATS, listeners) and fails early with a
//! clear error; the returned handle says what it is doing (`describe`);
//! `wait(&shutdown)` does the work until the input ends or a
//! [`Shutdown`] is triggered, then flushes, stores and returns a summary.
//!
//! ```no_run
//! use netspectra_node::{api::{ApiConfig, ApiServer}, Shutdown};
//! use netspectra_store::StoreUrl;
//! let shutdown = Shutdown::new();
//! let config = ApiConfig::loopback(StoreUrl::parse("sqlite:netspectra.db")?);
//! let server = ApiServer::start(config)?;
//! println!("{}", server.describe());
//! shutdown.trigger(); // from another thread, a signal handler, a test
//! server.serve_until(&shutdown)?;
//! # Ok::<(), netspectra_node::NodeError>(())
//! ```

pub mod ai;
pub mod alerter;
pub mod api;
pub mod bench;
pub mod engine;
mod error;
pub mod identity;
pub mod live;
pub mod offline;
pub mod probe;
pub mod report;
mod server_thread;
pub mod setup;
mod shutdown;
pub mod telemetry;

pub use error::NodeError;
pub use shutdown::Shutdown;
