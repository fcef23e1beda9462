//! The engine's error type.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `context` says what we were doing.
    /// (The cause is part of the message, not a separate `source`, so a
    /// chain printer does not repeat it.)
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    /// The tree holds state the engine cannot save; nothing was changed.
    #[error("task {pid}: {what} cannot be checkpointed")]
    Unsupported { pid: i32, what: String },
    /// The image is unreadable, corrupt or inconsistent.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// A restore step failed.
    #[error("restore: {0}")]
    Restore(String),
    /// A named fault was injected through `STASIS_FAULT` (tests only).
    #[error("injected fault at {0}")]
    Fault(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches a description of the failed step to an `io::Result`.
pub trait Context<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|cause| Error::Io { context: f(), cause })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Io { context: f(), cause: io::Error::from(e) })
    }
}

/// Every named fault point, in the order a dump or a restore reaches them.
///
/// `STASIS_FAULT=<name>[,<name>...]` makes the engine fail at that point
/// with [`Error::Fault`] (`injected fault at <name>`), exactly as a real
/// error there would: the failure paths are what the tests exercise.
/// `STASIS_FAULT_SLEEP=<name>[,<name>...]` instead prints
/// `stasis: pausing at <name>` on stderr and sleeps
/// [`FAULT_SLEEP`] there before going on, so a test can SIGKILL the engine
/// at a known point. Both are for tests only; unknown names never match.
///
/// Dump (`stasis tree dump`, `stasis checkpoint`):
///
/// | name          | where                                                        |
/// |---------------|--------------------------------------------------------------|
/// | `after-freeze`| `seize`: right after the cgroup is frozen (containers only)  |
/// | `after-seize` | every thread seized, nothing read yet                        |
/// | `mid-fd`      | `files`: half-way through the fds of a task                  |
/// | `mid-dump`    | half-way through the per-task loop                           |
/// | `mid-memory`  | all metadata collected, before page data is copied           |
/// | `write-image` | pages copied and validated, before `tree.img`/`inventory.img`|
/// | `before-kill` | image complete, before the tree is killed (not with `--leave-running`) |
///
/// Restore (`stasis tree restore`, `stasis restore`):
///
/// | name              | where                                                    |
/// |-------------------|----------------------------------------------------------|
/// | `after-namespaces`| the new pid namespace and its init exist, tree being built|
/// | `mid-tree`        | every stub created and waiting, none seized              |
/// | `mid-memory`      | half-way through morphing the stubs of a tracer thread   |
/// | `before-resume`   | every task morphed, none released                        |
pub const DUMP_FAULT_POINTS: &[&str] =
    &["after-freeze", "after-seize", "mid-fd", "mid-dump", "mid-memory", "write-image", "before-kill"];

/// The restore's fault points; see [`DUMP_FAULT_POINTS`].
pub const RESTORE_FAULT_POINTS: &[&str] = &["after-namespaces", "mid-tree", "mid-memory", "before-resume"];

/// How long a `STASIS_FAULT_SLEEP` point pauses.
pub const FAULT_SLEEP: std::time::Duration = std::time::Duration::from_secs(5);

fn names_point(var: &str, name: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.split(',').any(|p| p.trim() == name))
}

/// Fails with [`Error::Fault`] when `STASIS_FAULT` names this point; pauses
/// when `STASIS_FAULT_SLEEP` names it. See [`DUMP_FAULT_POINTS`].
pub fn fault_point(name: &'static str) -> Result<()> {
    debug_assert!(
        DUMP_FAULT_POINTS.contains(&name) || RESTORE_FAULT_POINTS.contains(&name),
        "fault point {name} is not listed in error.rs"
    );
    if names_point("STASIS_FAULT_SLEEP", name) {
        eprintln!("stasis: pausing at {name}");
        std::thread::sleep(FAULT_SLEEP);
    }
    if names_point("STASIS_FAULT", name) {
        return Err(Error::Fault(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names passed to `fault_point("...")` in the engine's sources.
    fn used_points() -> Vec<String> {
        let sources = [
            include_str!("dump.rs"),
            include_str!("seize.rs"),
            include_str!("files.rs"),
            include_str!("memory.rs"),
            include_str!("precopy.rs"),
            include_str!("restore/mod.rs"),
            include_str!("restore/morph.rs"),
            include_str!("restore/stub.rs"),
        ];
        let mut out = Vec::new();
        for s in sources {
            let mut rest = s;
            while let Some(i) = rest.find("fault_point(\"") {
                rest = &rest[i + "fault_point(\"".len()..];
                let end = rest.find('"').expect("closing quote");
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn every_fault_point_is_listed_and_used() {
        let mut listed: Vec<String> =
            DUMP_FAULT_POINTS.iter().chain(RESTORE_FAULT_POINTS).map(|s| s.to_string()).collect();
        listed.sort();
        listed.dedup();
        assert_eq!(used_points(), listed, "fault_point() calls and the lists in error.rs differ");
    }

    #[test]
    fn fault_point_fails_only_when_named() {
        // The only test in this crate touching these variables.
        std::env::set_var("STASIS_FAULT", "mid-tree, write-image");
        assert!(fault_point("after-seize").is_ok());
        let e = fault_point("write-image").unwrap_err();
        assert_eq!(e.to_string(), "injected fault at write-image");
        assert!(fault_point("mid-tree").is_err());
        std::env::remove_var("STASIS_FAULT");
        assert!(fault_point("write-image").is_ok());
    }
}
