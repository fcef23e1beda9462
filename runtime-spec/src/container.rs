//! The underlying runtime (runc by default) as `checkpoint` and `restore`
//! use it: ask for a container's state, create, start and delete it.
//!
//! Every call goes through the same binary and the same global flags as a
//! delegated verb (`delegate::argv`), so it sees the same state root. Queries
//! leave `--log`/`--log-format` out: an expected "does not exist" must not
//! land in the caller's log as an error line, since containerd reports the
//! last error line of that log as the cause of a failure.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::GlobalOpts;
use crate::delegate;
use crate::logging::Logger;

/// What the runtime's `state` says about a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub status: String,
    /// Host pid of the container's init (0 when stopped).
    pub pid: i32,
    pub bundle: PathBuf,
    /// RFC 3339 creation time ("" when the runtime gives none).
    pub created: String,
}

impl State {
    /// Parses the JSON that `runc state` prints.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(text).context("parse the runtime's state output")?;
        let status = v["status"]
            .as_str()
            .context("state has no status")?
            .to_string();
        let pid = v["pid"].as_i64().unwrap_or(0);
        let pid = i32::try_from(pid).with_context(|| format!("state has an invalid pid {pid}"))?;
        let bundle = PathBuf::from(v["bundle"].as_str().unwrap_or_default());
        let created = v["created"].as_str().unwrap_or_default().to_string();
        Ok(Self {
            status,
            pid,
            bundle,
            created,
        })
    }
}

/// The runtime, driven with the caller's global flags.
pub struct Runtime<'a> {
    global: &'a GlobalOpts,
    logger: &'a Logger,
}

impl<'a> Runtime<'a> {
    pub fn new(global: &'a GlobalOpts, logger: &'a Logger) -> Self {
        Self { global, logger }
    }

    /// `<runtime> [globals] verb args…`; `with_log: false` drops `--log*`.
    pub fn command<S: AsRef<std::ffi::OsStr>>(
        &self,
        verb: &str,
        args: &[S],
        with_log: bool,
    ) -> Command {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let mut argv = delegate::argv(self.global, verb, &args);
        if !with_log {
            argv.retain(|a| {
                let a = a.to_string_lossy();
                !a.starts_with("--log=") && !a.starts_with("--log-format=")
            });
        }
        self.logger.debug(&format!("running {argv:?}"));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    fn name(&self) -> String {
        self.global.runtime().to_string_lossy().into_owned()
    }

    /// The container's state; `None` when the runtime says it does not exist.
    pub fn state(&self, id: &str) -> anyhow::Result<Option<State>> {
        let out = self
            .command("state", &[id], false)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run runtime {}", self.name()))?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return State::from_json(&text).map(Some);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("does not exist") {
            return Ok(None);
        }
        bail!("{} state {id}: {}", self.name(), last_line(&err))
    }

    /// Runs `verb args…` with our own stdio (runtime errors reach the
    /// caller's stderr and `--log` as they would had it run the runtime).
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, verb: &str, args: &[S]) -> anyhow::Result<()> {
        let status = self
            .command(verb, args, true)
            .status()
            .with_context(|| format!("cannot run runtime {}", self.name()))?;
        check(status, &format!("{} {verb}", self.name()))
    }

    /// `delete --force ID`, output captured (for cleanups: the error being
    /// handled is the one worth reporting).
    pub fn delete_force(&self, id: &str) -> anyhow::Result<()> {
        let out = self
            .command("delete", &["--force", id], false)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run runtime {}", self.name()))?;
        if out.status.success() {
            return Ok(());
        }
        bail!(
            "{} delete --force {id}: {}",
            self.name(),
            last_line(&String::from_utf8_lossy(&out.stderr))
        )
    }
}

/// An error unless the runtime exited 0.
pub fn check(status: ExitStatus, what: &str) -> anyhow::Result<()> {
    if status.success() {
        return Ok(());
    }
    match status.code() {
        Some(code) => bail!("{what} failed with exit status {code}"),
        None => bail!("{what} was killed ({status})"),
    }
}

/// The last non-empty line of a runtime's stderr, with runc's logrus
/// `msg="…"` unwrapped when present.
fn last_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    match line.split_once("msg=\"") {
        Some((_, rest)) => rest.trim_end_matches('"').to_string(),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_of_runc() {
        let s = State::from_json(
            r#"{"ociVersion":"1.0.2-dev","id":"c","pid":4242,"status":"paused","bundle":"/b","rootfs":"/b/rootfs","created":"2026-01-01T00:00:00Z","owner":""}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            State {
                status: "paused".into(),
                pid: 4242,
                bundle: "/b".into(),
                created: "2026-01-01T00:00:00Z".into(),
            }
        );
        let stopped = State::from_json(r#"{"status":"stopped","pid":0,"bundle":"/b"}"#).unwrap();
        assert_eq!(stopped.pid, 0);
        assert!(State::from_json("{}").is_err());
        assert!(State::from_json("not json").is_err());
    }

    #[test]
    fn last_line_unwraps_logrus() {
        assert_eq!(
            last_line("time=\"2026\" level=error msg=\"container does not exist\"\n\n"),
            "container does not exist"
        );
        assert_eq!(last_line("first\nplain error\n"), "plain error");
        assert_eq!(last_line(""), "");
    }
}
