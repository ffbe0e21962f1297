//! The stop signal every role watches: raised by SIGINT/SIGTERM in the
//! binary, by a test, or by an embedding program.

use crate::error::{Context, NodeError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cloneable stop flag. Roles poll it (at least every few hundred
/// milliseconds) and, once it is raised, finish what they hold (flush the
/// open window, store it, ack) and return from `wait`.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag nobody has raised yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A flag raised by SIGINT or SIGTERM; a second signal exits the process
    /// at once (status 1) in case the shutdown hangs.
    pub fn on_signals() -> Result<Shutdown, NodeError> {
        let stop = Shutdown::new();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop.0))
                .context("cannot install signal handler")?;
            signal_hook::flag::register(sig, Arc::clone(&stop.0))
                .context("cannot install signal handler")?;
        }
        Ok(stop)
    }

    /// Asks every role holding a clone to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    #[inline]
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
