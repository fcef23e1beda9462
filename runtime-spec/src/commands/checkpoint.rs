//! `stasis checkpoint`: placeholder until the checkpoint engine is wired in.

use crate::cli::{CheckpointOpts, GlobalOpts};

pub fn run(_global: &GlobalOpts, _opts: &CheckpointOpts) -> anyhow::Result<i32> {
    anyhow::bail!("checkpoint: the checkpoint engine is not wired into the CLI yet")
}
