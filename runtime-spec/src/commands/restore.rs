//! `stasis restore`: placeholder until the checkpoint engine is wired in.

use crate::cli::{GlobalOpts, RestoreOpts};

pub fn run(_global: &GlobalOpts, _opts: &RestoreOpts) -> anyhow::Result<i32> {
    anyhow::bail!("restore: the checkpoint engine is not wired into the CLI yet")
}
