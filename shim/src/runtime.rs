//! Runs the `stasis` binary with runc's command line, as go-runc does for
//! the runc shim: `stasis --root R --log <bundle>/log.json --log-format json
//! VERB ...`. The shim never forks container processes itself.
//!
//! Where stasis is: `$STASIS_BINARY`, else `stasis` next to the shim's own
//! executable, else `stasis` on PATH. The state root: `$STASIS_SHIM_ROOT`,
//! else `/run/containerd/stasis`, then the containerd namespace.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{io_err, Result, ShimError};
use crate::reaper::Reaper;
use crate::stdio::ChildFds;

pub const BINARY_ENV: &str = "STASIS_BINARY";
pub const ROOT_ENV: &str = "STASIS_SHIM_ROOT";
const DEFAULT_ROOT: &str = "/run/containerd/stasis";

/// The stasis binary the shim runs (see the module doc).
pub fn find_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(BINARY_ENV).filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("stasis")))
        .filter(|p| p.is_file())
    {
        return beside;
    }
    PathBuf::from("stasis")
}

/// The `--root` for containers of `namespace`.
pub fn state_root(namespace: &str) -> PathBuf {
    let base = std::env::var_os(ROOT_ENV)
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    base.join(namespace)
}

/// What a finished command printed.
pub struct Output {
    pub stdout: Vec<u8>,
}

/// The command's stdio: the container's (create, start, restore, exec), or
/// captured by the shim.
pub enum CmdIo<'a> {
    Process(ChildFds),
    Capture { stdin: Option<&'a [u8]> },
}

#[derive(Clone)]
pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
    reaper: Reaper,
}

impl Runtime {
    pub fn new(bin: PathBuf, root: PathBuf, reaper: Reaper) -> Self {
        Self { bin, root, reaper }
    }

    /// Runs `stasis <global flags> args` and waits for it. On failure the
    /// error is the last error stasis logged to `<bundle>/log.json` during
    /// this run, else its stderr, else its exit status.
    pub fn run(&self, bundle: &Path, args: &[&str], io: CmdIo<'_>) -> Result<Output> {
        let log = bundle.join("log.json");
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json"])
            .args(args)
            .current_dir(bundle)
            // As containerd does for runc: the shim's systemd socket is not
            // the container's.
            .env_remove("NOTIFY_SOCKET");
        let mut stdin_data = None;
        let capture = match io {
            CmdIo::Process(fds) => {
                fds.apply(&mut cmd);
                false
            }
            CmdIo::Capture { stdin } => {
                stdin_data = stdin;
                cmd.stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
                true
            }
        };
        log::debug!("run {} {:?}", self.bin.display(), args);
        let (mut child, exit) = self
            .reaper
            .spawn(&mut cmd)
            .map_err(io_err(format!("run {}", self.bin.display())))?;
        // The child has its copies of the container's fds: close ours.
        drop(cmd);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if capture {
            if let (Some(data), Some(mut pipe)) = (stdin_data, child.stdin.take()) {
                let data = data.to_vec();
                std::thread::spawn(move || {
                    let _ = pipe.write_all(&data);
                });
            }
            let err_pipe = child.stderr.take();
            let err_thread = std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = err_pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            });
            if let Some(mut p) = child.stdout.take() {
                let _ = p.read_to_end(&mut stdout);
            }
            stderr = err_thread.join().unwrap_or_default();
        }
        let exit = exit
            .recv()
            .map_err(|_| ShimError::Runtime(format!("{} vanished", self.bin.display())))?;
        if exit.status == 0 {
            return Ok(Output { stdout });
        }
        let msg = last_logged_error(&log, log_start)
            .or_else(|| {
                let s = String::from_utf8_lossy(&stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exit status {}", exit.status));
        Err(ShimError::Runtime(format!(
            "stasis {}: {msg}",
            args.first().copied().unwrap_or("")
        )))
    }
}

/// The message of the last `{"level":"error","msg":...}` line appended to
/// `log` after byte `from` (runc's and stasis' JSON log format).
fn last_logged_error(log: &Path, from: u64) -> Option<String> {
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(str::to_string))
}

/// Errors that mean the process or container is already gone (runc's
/// wording, which stasis passes on for delegated verbs).
pub fn is_gone(e: &ShimError) -> bool {
    let msg = e.to_string();
    [
        "does not exist",
        "container not running",
        "no such process",
        "process already finished",
    ]
    .iter()
    .any(|s| msg.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_logged_by_this_run_is_reported() {
        let dir = std::env::temp_dir().join(format!("shim-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.json");
        std::fs::write(&log, "{\"level\":\"error\",\"msg\":\"old\"}\n").unwrap();
        let from = std::fs::metadata(&log).unwrap().len();
        assert_eq!(last_logged_error(&log, from), None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(f, "{{\"level\":\"info\",\"msg\":\"x\"}}").unwrap();
        writeln!(f, "{{\"level\":\"error\",\"msg\":\"first\"}}").unwrap();
        writeln!(
            f,
            "{{\"level\":\"error\",\"msg\":\"container does not exist\"}}"
        )
        .unwrap();
        assert_eq!(
            last_logged_error(&log, from).as_deref(),
            Some("container does not exist")
        );
        assert!(is_gone(&ShimError::Runtime(
            "stasis kill: container does not exist".into()
        )));
        assert!(!is_gone(&ShimError::Runtime(
            "stasis kill: permission denied".into()
        )));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
