//! (being written)

use crate::Outcome;
use clap::Args;

/// Arguments (being written).
#[derive(Args)]
pub struct EngineArgs {}

pub fn run(_args: EngineArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not available yet")
}
