//! `binary://` log URIs, as containerd's runc shim runs them (nerdctl's
//! logging and other log drivers use them): `binary:///path/to/logger?k=v`
//! starts `/path/to/logger k v` as a child of the shim, with the process's
//! stdout on its fd 3, stderr on fd 4 and a "ready" pipe on fd 5, and
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its environment. The
//! process starts once the logger has closed fd 5 (or exited). The logger
//! reads until end of file, when the process's streams close; the shim's
//! reaper collects it.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{io_err, Result, ShimError};
use crate::stdio::pipe;

/// How long a logger may take to close its fd 5.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `binary://` URI taken apart: the logger and its arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Logger {
    pub path: String,
    pub args: Vec<String>,
}

impl Logger {
    /// Parses `binary://<path>[?k=v&...]`; each query pair becomes two
    /// arguments, `k` then `v` (in the URI's order; containerd's Go map
    /// gives no order), percent-escapes and `+` decoded as Go's url package
    /// does.
    pub fn parse(uri: &str) -> Option<Logger> {
        let rest = uri.strip_prefix("binary://")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = unescape(path, false)?;
        if !path.starts_with('/') {
            return None;
        }
        let mut args = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            args.push(unescape(k, true)?);
            args.push(unescape(v, true)?);
        }
        Some(Logger { path, args })
    }

    /// Starts the logger for container `id` in `namespace`; returns the
    /// write ends for the process's stdout and stderr once it is ready.
    pub fn start(&self, id: &str, namespace: &str) -> Result<(OwnedFd, OwnedFd)> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (mut ready_r, ready_w) = pipe()?;
        let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
        let mut cmd = Command::new(&self.path);
        cmd.args(&self.args)
            .env("CONTAINER_ID", id)
            .env("CONTAINER_NAMESPACE", namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure only calls fcntl and dup2, which are
        // async-signal-safe, on fds that stay open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // Copies above the targets first, so that no source is
                // overwritten before it is moved; close-on-exec, so the
                // logger holds each pipe once (fd 5's end of file is its
                // "ready").
                let mut high = [0; 3];
                for (h, &fd) in high.iter_mut().zip(&fds) {
                    *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if *h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (target, &h) in (3..).zip(&high) {
                    if libc::dup2(h, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(io_err(format!("start logging binary {}", self.path)))?;
        drop((out_r, err_r, ready_w));
        wait_ready(&mut ready_r, &self.path)?;
        Ok((out_w.into(), err_w.into()))
    }
}

/// Waits until the logger closes (or writes to) its end of the ready pipe.
fn wait_ready(ready: &mut File, path: &str) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
    let ms = READY_TIMEOUT.as_millis() as u16;
    let n = poll(&mut fds, PollTimeout::from(ms)).map_err(|e| io_err("poll")(e.into()))?;
    if n == 0 {
        return Err(ShimError::Runtime(format!(
            "logging binary {path} did not close fd 5 within {} s",
            READY_TIMEOUT.as_secs()
        )));
    }
    let mut b = [0u8; 1];
    ready
        .read(&mut b)
        .map(drop)
        .map_err(io_err(format!("read the ready pipe of {path}")))
}

/// Decodes `%XX` escapes (and `+` as a space in a query).
fn unescape(s: &str, query: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_become_a_path_and_arguments() {
        assert_eq!(
            Logger::parse("binary:///usr/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib%2Fnerdctl&x=a+b"),
            Some(Logger {
                path: "/usr/bin/nerdctl".into(),
                args: vec!["_NERDCTL_INTERNAL_LOGGING".into(), "/var/lib/nerdctl".into(), "x".into(), "a b".into()],
            })
        );
        assert_eq!(
            Logger::parse("binary:///opt/my%20logger"),
            Some(Logger { path: "/opt/my logger".into(), args: vec![] })
        );
        assert_eq!(Logger::parse("binary://relative/logger"), None);
        assert_eq!(Logger::parse("binary:///bad%zz"), None);
        assert_eq!(Logger::parse("file:///log"), None);
    }
}
