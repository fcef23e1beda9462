//! Child reaping for the shim, which is a child subreaper: the container's
//! init and exec processes are reparented to it once the runtime exits.
//!
//! One thread waits for SIGCHLD and reaps every child. Each exit goes to
//! whoever watches that pid (a runtime command being run, or the service for
//! a container process); exits nobody watches yet are kept, because a
//! container process can exit before the shim has read its pid file.
//! `spawn` registers the new child while holding the reaper's lock, so its
//! exit cannot be reaped before it is watched, and a stale kept exit of an
//! earlier process with the same pid is dropped first.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a process ended, in containerd's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + the signal that killed it.
    pub status: u32,
    pub at: SystemTime,
}

/// Exits nobody watched are kept, up to this many (oldest dropped first).
const KEPT_EXITS: usize = 1024;

#[derive(Default)]
struct Inner {
    watchers: HashMap<i32, Sender<Exit>>,
    unclaimed: HashMap<i32, Exit>,
}

#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

impl Reaper {
    /// Starts the reaping thread. SIGCHLD must not be ignored.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Reaper::default();
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGCHLD])?;
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                // Children that exited before the handler was installed.
                r.reap_all();
                for _ in signals.forever() {
                    r.reap_all();
                }
            })?;
        Ok(reaper)
    }

    fn reap_all(&self) {
        let mut inner = self.inner.lock().unwrap();
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
            };
            let exit = Exit {
                pid,
                status,
                at: SystemTime::now(),
            };
            match inner.watchers.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => {
                    if inner.unclaimed.len() >= KEPT_EXITS {
                        if let Some(oldest) =
                            inner.unclaimed.values().min_by_key(|e| e.at).map(|e| e.pid)
                        {
                            inner.unclaimed.remove(&oldest);
                        }
                    }
                    inner.unclaimed.insert(pid, exit);
                }
            }
        }
    }

    /// Spawns `cmd` and returns it with a receiver for its exit. Use this,
    /// never `Child::wait`, for the shim's children: the reaper owns them.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, Receiver<Exit>)> {
        let mut inner = self.inner.lock().unwrap();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        inner.unclaimed.remove(&pid);
        let (tx, rx) = channel();
        inner.watchers.insert(pid, tx);
        Ok((child, rx))
    }

    /// Sends the exit of `pid` (a process the shim adopted) to `tx`, at once
    /// if it has already been reaped.
    pub fn watch(&self, pid: i32, tx: Sender<Exit>) {
        let mut inner = self.inner.lock().unwrap();
        match inner.unclaimed.remove(&pid) {
            Some(exit) => {
                let _ = tx.send(exit);
            }
            None => {
                inner.watchers.insert(pid, tx);
            }
        }
    }
}
