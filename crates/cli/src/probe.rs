//! (being written)

use crate::Outcome;
use clap::Args;

/// Arguments (being written).
#[derive(Args)]
pub struct ProbeArgs {}

pub fn run(_args: ProbeArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not available yet")
}
