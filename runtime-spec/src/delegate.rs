//! Pure delegation: replace this process with the underlying runtime.
//!
//! exec keeps the pid, stdio, every inherited descriptor (`--preserve-fds`,
//! `--console-socket`, `LISTEN_FDS`), the signal mask and the parent/child
//! relation, so the runtime's exit code, signals and output reach the caller
//! exactly as if it had run the runtime itself.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use anyhow::{anyhow, Context};
use nix::sys::signal::{signal, SigHandler, Signal};

use crate::cli::GlobalOpts;
use crate::logging::Logger;

/// The runtime's argv: runtime, re-serialised global flags, verb, the
/// verb's arguments untouched.
pub fn argv(global: &GlobalOpts, verb: &str, args: &[OsString]) -> Vec<OsString> {
    let mut argv = vec![global.runtime()];
    argv.extend(global.runtime_args());
    argv.push(verb.into());
    argv.extend(args.iter().cloned());
    argv
}

/// Exec the runtime; returns only if the exec failed.
pub fn exec(global: &GlobalOpts, verb: &str, args: &[OsString], logger: &Logger) -> anyhow::Error {
    let argv = argv(global, verb, args);
    logger.debug(&format!("delegating to {argv:?}"));
    let runtime = argv[0].to_string_lossy().into_owned();
    let cargs = match argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("argument contains a nul byte")
    {
        Ok(c) => c,
        Err(e) => return e,
    };
    // The Rust runtime ignores SIGPIPE; the runtime must get the default back,
    // as it would had the caller exec'd it directly.
    // SAFETY: installing SIG_DFL runs no handler code; we are single-threaded.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        return anyhow!(
            "cannot reset SIGPIPE before running {runtime}: {}",
            e.desc()
        );
    }
    let Err(e) = nix::unistd::execvp(&cargs[0], &cargs);
    // SAFETY: as above; back to the Rust runtime's setting for our own output.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    anyhow!("cannot run runtime {runtime}: {}", e.desc().to_lowercase())
}
