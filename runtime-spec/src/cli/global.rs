//! Global flags: runc's set (they come before the verb) plus stasis' own
//! `--runtime-binary`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::flags::{FlagSpec, Parsed};

/// Environment variable naming the runtime that delegated verbs go to.
pub const RUNTIME_ENV: &str = "STASIS_RUNTIME";
/// The runtime used when neither `--runtime-binary` nor the env is set.
pub const DEFAULT_RUNTIME: &str = "runc";
/// runc's default state root for a privileged caller.
#[allow(dead_code)] // read through `state_root` by the engine commands
pub const DEFAULT_ROOT: &str = "/run/runc";

pub static GLOBAL_FLAGS: &[FlagSpec] = &[
    FlagSpec::boolean("debug", "enable debug logging"),
    FlagSpec::value(
        "log",
        "set the log file to write logs to (default is '/dev/stderr')",
    ),
    FlagSpec::value(
        "log-format",
        "set the log format ('text' (default), or 'json')",
    ),
    FlagSpec::value(
        "root",
        "root directory for storage of container state (default: \"/run/runc\")",
    ),
    FlagSpec::value(
        "criu",
        "accepted for runc compatibility and ignored (stasis does not use criu)",
    ),
    FlagSpec::boolean("systemd-cgroup", "enable systemd cgroup support"),
    FlagSpec::value(
        "rootless",
        "ignore cgroup permission errors ('true', 'false', or 'auto')",
    ),
    FlagSpec::value(
        "runtime-binary",
        "runtime that non-checkpoint verbs are delegated to (default: $STASIS_RUNTIME or \"runc\")",
    ),
    FlagSpec::boolean("help", "show help").alias(&["h"]),
    FlagSpec::boolean("version", "print the version").alias(&["v"]),
];

/// Format of the lines written to `--log`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The global options, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalOpts {
    /// `--root`; `None` means the runtime's default (see [`GlobalOpts::state_root`]).
    pub root: Option<PathBuf>,
    /// `--log`; `None` means stderr.
    pub log: Option<PathBuf>,
    pub log_format: LogFormat,
    pub debug: bool,
    pub systemd_cgroup: bool,
    /// `--rootless true|false|auto`, passed through as given.
    pub rootless: Option<String>,
    /// `--runtime-binary`; see [`GlobalOpts::runtime`].
    pub runtime_binary: Option<PathBuf>,
}

impl GlobalOpts {
    pub(super) fn from_parsed(p: &Parsed) -> Result<Self, String> {
        let log_format = match p.str("log-format") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(format!("invalid log-format: {other}")),
        };
        let path = |name| p.str(name).filter(|s| !s.is_empty()).map(PathBuf::from);
        Ok(Self {
            root: path("root"),
            log: path("log"),
            log_format,
            debug: p.bool("debug"),
            systemd_cgroup: p.bool("systemd-cgroup"),
            rootless: p.str("rootless").map(str::to_string),
            runtime_binary: path("runtime-binary"),
        })
    }

    /// The state directory: `--root`, else runc's default (`/run/runc`, or
    /// `$XDG_RUNTIME_DIR/runc` for an unprivileged caller, as runc does).
    #[allow(dead_code)] // for the engine commands
    pub fn state_root(&self) -> PathBuf {
        if let Some(root) = &self.root {
            return root.clone();
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if euid != 0 && !dir.is_empty() => PathBuf::from(dir).join("runc"),
            _ => PathBuf::from(DEFAULT_ROOT),
        }
    }

    /// The runtime delegated verbs go to: `--runtime-binary`, else
    /// `$STASIS_RUNTIME`, else `runc` (looked up in `PATH`).
    pub fn runtime(&self) -> OsString {
        if let Some(bin) = &self.runtime_binary {
            return bin.clone().into_os_string();
        }
        match std::env::var_os(RUNTIME_ENV) {
            Some(v) if !v.is_empty() => v,
            _ => OsString::from(DEFAULT_RUNTIME),
        }
    }

    /// The global flags re-serialised for the underlying runtime, in the
    /// `--flag=value` form that both Go-flag (runc) and argp (crun) accept.
    /// `--criu` and `--runtime-binary` are stasis' business and are dropped.
    pub fn runtime_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        let mut with_value = |name: &str, value: &std::ffi::OsStr| {
            let mut a = OsString::from(format!("--{name}="));
            a.push(value);
            args.push(a);
        };
        if let Some(root) = &self.root {
            with_value("root", root.as_os_str());
        }
        if let Some(log) = &self.log {
            with_value("log", log.as_os_str());
        }
        if self.log_format == LogFormat::Json {
            with_value("log-format", "json".as_ref());
        }
        if let Some(rootless) = &self.rootless {
            with_value("rootless", rootless.as_ref());
        }
        if self.debug {
            args.push("--debug".into());
        }
        if self.systemd_cgroup {
            args.push("--systemd-cgroup".into());
        }
        args
    }
}
