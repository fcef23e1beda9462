//! The engine's error type.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `context` says what we were doing.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
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
        self.map_err(|source| Error::Io { context: f(), source })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Io { context: f(), source: io::Error::from(e) })
    }
}

/// Fails with [`Error::Fault`] when `STASIS_FAULT` names this point.
pub fn fault_point(name: &'static str) -> Result<()> {
    match std::env::var("STASIS_FAULT") {
        Ok(v) if v.split(',').any(|p| p == name) => Err(Error::Fault(name)),
        _ => Ok(()),
    }
}
