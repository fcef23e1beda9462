//! Holding a process tree still: every thread of every process is seized
//! with `PTRACE_SEIZE` + `PTRACE_INTERRUPT` (no signal side effects), and
//! the tree is rescanned until no new child or thread appears, so a task
//! that forks or spawns a thread while we attach is caught too. When the
//! tree lives in a cgroup, the caller freezes it first (see `freezer`), so
//! one pass suffices.
//!
//! [`Seized`] owns the tracing: dropping it (on any error) detaches every
//! thread, leaving the tree running exactly as before.

use std::collections::{HashSet, VecDeque};

use crate::error::{Context, Error, Result};
use crate::freezer::Freezer;
use crate::proc;
use crate::sys::ptrace::{self, Stop};

#[derive(Debug)]
pub struct SeizedTask {
    /// Host pid (as seen by the engine).
    pub pid: i32,
    /// Seized threads, leader first. Empty for zombies.
    pub tids: Vec<i32>,
    pub status: proc::Status,
    pub zombie: bool,
    /// The task was in a job-control stop before we seized it.
    pub stopped: bool,
}

pub struct Seized {
    /// Parents before children.
    pub tasks: Vec<SeizedTask>,
    released: bool,
    freezer: Option<Freezer>,
    /// The cgroup was frozen (paused) before we came: leave it frozen.
    was_frozen: bool,
    /// Threads were seized but may not have reached their ptrace stop yet
    /// (between the seize of a frozen tree and the wait after the thaw).
    unwaited: bool,
}

fn seize_thread(tid: i32) -> Result<bool> {
    if !seize_nowait(tid)? {
        return Ok(false);
    }
    wait_stop(tid)
}

/// `PTRACE_SEIZE` + `PTRACE_INTERRUPT`; false when the thread is gone.
fn seize_nowait(tid: i32) -> Result<bool> {
    // Seccomp is suspended for our tracees so a filter cannot refuse (or
    // kill on) the syscalls we inject.
    match ptrace::seize(tid, ptrace::PTRACE_O_TRACESYSGOOD | ptrace::PTRACE_O_SUSPEND_SECCOMP) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // Either a zombie thread or someone else already traces it.
            let st = proc::Status::read(&format!("/proc/{tid}/status")).ok();
            if st.as_ref().is_some_and(|s| s.state == 'Z' || s.state == 'X') {
                return Ok(false);
            }
            return Err(Error::Unsupported { pid: tid, what: "a thread traced by another process".into() });
        }
        Err(e) => return Err(e).ctx(|| format!("seize thread {tid}")),
    }
    ptrace::interrupt(tid).ctx(|| format!("interrupt thread {tid}"))?;
    Ok(true)
}

fn wait_stop(tid: i32) -> Result<bool> {
    // Wait for the interrupt stop; a signal that raced with us is delivered
    // (so it is not lost) and we wait again.
    loop {
        match ptrace::wait(tid).ctx(|| format!("wait for thread {tid} to stop"))? {
            Stop::Stopped { event: ptrace::PTRACE_EVENT_STOP, .. } => return Ok(true),
            Stop::Stopped { sig, .. } => ptrace::cont(tid, sig).ctx(|| format!("resume thread {tid}"))?,
            Stop::Exited(_) | Stop::Signaled(_) => return Ok(false),
        }
    }
}

impl Seized {
    /// Seizes `root` and all its descendants. With a freezer, the cgroup is
    /// frozen first, every thread seized and interrupted, then thawed so each
    /// goes straight from the freezer into its ptrace stop.
    pub fn collect(root: i32, freezer: Option<Freezer>) -> Result<Seized> {
        let Some(fz) = freezer else { return Self::collect_live(root) };
        let was_frozen = fz.is_frozen().ctx(|| format!("read freezer state of {}", fz.dir().display()))?;
        fz.freeze().ctx(|| format!("freeze {}", fz.dir().display()))?;
        let mut seized = Seized { tasks: Vec::new(), released: false, freezer: Some(fz), was_frozen, unwaited: false };
        crate::error::fault_point("after-freeze")?;
        // The frozen tree cannot change: list it, check nothing else is in
        // the cgroup, and only then seize (so a refusal touches nothing).
        let mut queue: VecDeque<i32> = VecDeque::from([root]);
        let mut threads: Vec<Vec<i32>> = Vec::new();
        while let Some(pid) = queue.pop_front() {
            let status = proc::Status::read(&format!("/proc/{pid}/status")).ctx(|| format!("read status of task {pid}"))?;
            let task = SeizedTask { pid, tids: Vec::new(), zombie: status.state == 'Z', stopped: status.state == 'T', status };
            if task.zombie {
                threads.push(Vec::new());
            } else {
                threads.push(proc::threads(pid).ctx(|| format!("list threads of {pid}"))?);
                queue.extend(proc::children(pid).ctx(|| format!("list children of {pid}"))?);
            }
            seized.tasks.push(task);
        }
        let fz = seized.freezer.as_ref().expect("set above");
        let inside: HashSet<i32> = seized.tasks.iter().map(|t| t.pid).collect();
        for pid in fz.pids().ctx(|| "list the cgroup's tasks".into())? {
            if !inside.contains(&pid) {
                return Err(Error::Unsupported {
                    pid,
                    what: "a process in the container's cgroup outside its init's tree (an exec session?)".into(),
                });
            }
        }
        seized.unwaited = true;
        for (t, tids) in seized.tasks.iter_mut().zip(threads) {
            for tid in tids {
                if seize_nowait(tid)? {
                    t.tids.push(tid);
                }
            }
        }
        let fz = seized.freezer.as_ref().expect("set above");
        fz.thaw().ctx(|| "thaw the cgroup into ptrace stops".into())?;
        for t in &mut seized.tasks {
            let mut live = Vec::new();
            for &tid in &t.tids {
                if wait_stop(tid)? {
                    live.push(tid);
                }
            }
            t.tids = live;
        }
        seized.unwaited = false;
        for t in &mut seized.tasks {
            if !t.zombie {
                if !t.tids.contains(&t.pid) {
                    return Err(Error::Unsupported { pid: t.pid, what: "a process whose main thread has exited".into() });
                }
                t.status = proc::Status::read(&format!("/proc/{}/status", t.pid)).ctx(|| format!("read status of {}", t.pid))?;
            }
        }
        Ok(seized)
    }

    fn collect_live(root: i32) -> Result<Seized> {
        let mut seized = Seized { tasks: Vec::new(), released: false, freezer: None, was_frozen: false, unwaited: false };
        let mut seen: HashSet<i32> = HashSet::new();
        let mut queue: VecDeque<i32> = VecDeque::from([root]);
        while let Some(pid) = queue.pop_front() {
            if !seen.insert(pid) {
                continue;
            }
            let status = proc::Status::read(&format!("/proc/{pid}/status"))
                .ctx(|| format!("read status of task {pid}"))?;
            let mut task = SeizedTask { pid, tids: Vec::new(), zombie: false, stopped: status.state == 'T', status };
            if task.status.state == 'Z' {
                task.zombie = true;
                seized.tasks.push(task);
                continue;
            }
            // Threads: seize until the list stops growing.
            let mut done: HashSet<i32> = HashSet::new();
            loop {
                let tids = proc::threads(pid).ctx(|| format!("list threads of {pid}"))?;
                let new: Vec<i32> = tids.into_iter().filter(|t| !done.contains(t)).collect();
                if new.is_empty() {
                    break;
                }
                for tid in new {
                    done.insert(tid);
                    match seize_thread(tid) {
                        Ok(true) => task.tids.push(tid),
                        Ok(false) => {}
                        Err(e) => {
                            // This task is not in `seized` yet: let its
                            // threads go here, the others go on drop.
                            seized.detach_list(&task.tids);
                            return Err(e);
                        }
                    }
                }
            }
            if !task.tids.contains(&pid) {
                seized.detach_list(&task.tids);
                if proc::Status::read(&format!("/proc/{pid}/status")).is_err() {
                    // Exited while we looked: not part of the tree any more.
                    continue;
                }
                return Err(Error::Unsupported { pid, what: "a process whose main thread has exited".into() });
            }
            // From here on the task's threads are released on drop.
            seized.tasks.push(task);
            let task = seized.tasks.last_mut().expect("just pushed");
            task.tids.sort_unstable_by_key(|&t| (t != pid, t));
            let kids = proc::children(pid).ctx(|| format!("list children of {pid}"))?;
            // Re-read status now that it is stopped (pending signals are final).
            task.status = proc::Status::read(&format!("/proc/{pid}/status")).ctx(|| format!("read status of {pid}"))?;
            queue.extend(kids);
        }
        Ok(seized)
    }

    fn detach_list(&self, tids: &[i32]) {
        for &t in tids {
            let _ = ptrace::detach(t, 0);
        }
    }

    /// Detaches every thread: the tree runs on as it was.
    pub fn release(mut self) {
        self.release_all();
    }

    fn release_all(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        if self.unwaited {
            // Seized but maybe not stopped yet: only a stopped tracee can be
            // detached, so let everyone reach its stop first.
            if let Some(fz) = &self.freezer {
                let _ = fz.thaw();
            }
            for t in &self.tasks {
                for &tid in &t.tids {
                    let _ = wait_stop(tid);
                }
            }
        }
        if let (Some(fz), true) = (&self.freezer, self.was_frozen) {
            // Paused before we came: stopped under ptrace counts as frozen, so
            // re-freezing first means nothing runs after we detach.
            let _ = fz.freeze();
        }
        for t in &self.tasks {
            self.detach_list(&t.tids);
        }
        if let (Some(fz), false) = (&self.freezer, self.was_frozen) {
            let _ = fz.thaw();
        }
    }

    /// Kills the whole tree (after a successful dump) and reaps what we can.
    ///
    /// The memory of the processes in `large` (host pids) is also freed
    /// from here while they exit, which splits that work in two (the kill
    /// of a 2 GiB process: ~90 ms instead of 135-185 ms). `process_mrelease`
    /// only works between the SIGKILL and the moment the dying process drops
    /// its memory, which it does within microseconds of waking. So with a v1
    /// freezer the tree is frozen again first (ptrace-stopped tasks freeze at
    /// once, and a frozen task does not wake for SIGKILL), killed, and thawed
    /// once the reaper has started. Elsewhere (v2 freezes do not hold back a
    /// SIGKILL) the process frees its memory alone. Returns how many
    /// processes the reapers freed.
    pub fn kill(mut self, large: &[i32]) -> usize {
        let pidfds: Vec<_> = large.iter().filter_map(|&pid| crate::sys::pidfd_open(pid).ok()).collect();
        let hold = match &self.freezer {
            Some(fz @ Freezer::V1(_)) if !pidfds.is_empty() => fz.freeze_within(std::time::Duration::from_millis(100)).is_ok(),
            _ => false,
        };
        let thaw = || {
            if let Some(fz) = &self.freezer {
                let _ = fz.thaw();
            }
        };
        if !hold {
            thaw();
        }
        for t in &self.tasks {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(t.pid), nix::sys::signal::Signal::SIGKILL);
        }
        let reaped = if !hold {
            0
        } else {
            std::thread::scope(|s| {
                let (started, on_start) = std::sync::mpsc::channel();
                let reapers: Vec<_> = pidfds
                    .iter()
                    .map(|fd| {
                        let started = started.clone();
                        s.spawn(move || {
                            let _ = started.send(());
                            // Best effort: on any error the process frees it all itself.
                            crate::sys::process_mrelease(std::os::fd::AsFd::as_fd(fd)).is_ok()
                        })
                    })
                    .collect();
                // Give the reapers a moment to get into the kernel; losing
                // the race only means the process frees its memory alone.
                for _ in &reapers {
                    let _ = on_start.recv();
                }
                std::thread::sleep(std::time::Duration::from_micros(300));
                thaw();
                reapers.into_iter().filter_map(|r| r.join().ok()).filter(|&freed| freed).count()
            })
        };
        // Collect every tracee's exit notification so no traced zombie
        // lingers (a dying pid-namespace init waits for its children, whose
        // exits we, as their tracer, must collect first).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut left: HashSet<i32> = self.tasks.iter().flat_map(|t| t.tids.iter().copied()).collect();
        while !left.is_empty() && std::time::Instant::now() < deadline {
            match ptrace::wait_any_nohang() {
                Ok(Some(tid)) => {
                    left.remove(&tid);
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(_) => break,
            }
        }
        self.released = true;
        reaped
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        self.release_all();
    }
}
