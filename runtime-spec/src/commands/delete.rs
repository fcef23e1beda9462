//! `stasis delete [--force] ID`: the runtime's delete, then stasis' own
//! per-container directory of a restored container (`restore_bundle`).
//!
//! Unlike other delegated verbs the runtime is spawned and waited for rather
//! than exec'd; its stdio, output and exit code still pass through unchanged.

use std::ffi::OsString;
use std::process::ExitStatus;

use anyhow::Context;

use crate::cli::GlobalOpts;
use crate::container::Runtime;
use crate::logging::Logger;
use crate::restore_bundle;

pub fn run(global: &GlobalOpts, args: &[OsString], logger: &Logger) -> anyhow::Result<i32> {
    let Some(id) = container_id(args) else {
        // No id: only the runtime's usage error to show.
        return Err(crate::delegate::exec(global, "delete", args, logger));
    };
    // runc's own stderr/--log carry its errors; SIGPIPE back to default in
    // the child as for an exec'd runtime (std does that for spawned children).
    let status = Runtime::new(global, logger)
        .command("delete", args, true)
        .status()
        .with_context(|| format!("cannot run runtime {}", global.runtime().to_string_lossy()))?;
    let code = exit_code(status);
    if code == 0 {
        let dir = restore_bundle::private_dir(global, &id);
        if let Err(e) = restore_bundle::remove(&dir) {
            logger.error(&format!("remove {}: {e}", dir.display()));
            return Ok(1);
        }
    }
    Ok(code)
}

/// The `<container-id>` of `delete [--force|-f] ID`: its one positional.
fn container_id(args: &[OsString]) -> Option<String> {
    args.iter()
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-') && !a.is_empty() && !a.contains('/'))
        .map(str::to_string)
}

/// A shell's convention for a child killed by a signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_id() {
        assert_eq!(container_id(&os(&["c1"])).as_deref(), Some("c1"));
        assert_eq!(container_id(&os(&["--force", "c1"])).as_deref(), Some("c1"));
        assert_eq!(container_id(&os(&["-f", "c1"])).as_deref(), Some("c1"));
        assert_eq!(
            container_id(&os(&["c1", "--force=true"])).as_deref(),
            Some("c1")
        );
        assert_eq!(container_id(&os(&["--force"])), None);
        assert_eq!(container_id(&os(&["../x"])), None);
    }
}
