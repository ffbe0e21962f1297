//! (being written)

use crate::Outcome;
use clap::Args;

/// Arguments (being written).
#[derive(Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not available yet")
}
