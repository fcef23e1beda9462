//! Remote system calls: run one syscall inside a ptrace-stopped thread.
//!
//! The thread's registers are pointed at a `syscall` instruction (any
//! `0f 05` byte pair in its `[vdso]` text: execution starts there, so the
//! surrounding instruction boundaries do not matter), single-stepped once,
//! and the result read from `rax`. Pitfalls handled (engine note §3.4):
//! `orig_rax = -1` so the kernel's syscall-restart logic cannot rewind into
//! the task's own interrupted syscall; all signals blocked while injecting
//! so no handler runs; DF cleared; registers and mask restored afterwards.
//!
//! A single step ends in a SIGTRAP signal-delivery-stop. Should the tracer
//! die while a thread sits there, the kernel restarts it *delivering* that
//! SIGTRAP, which kills the process: a dump that is SIGKILLed (OOM killer,
//! impatient user) would take the tree down with it. So [`Remote::finish`]
//! (and an abandoned session's drop) parks the thread back in a
//! `PTRACE_EVENT_STOP`, the stop `PTRACE_INTERRUPT` puts a seized thread
//! in, from which a dying tracer's threads resume untouched. Only the few
//! microseconds of an injected call remain exposed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::ptrace::{self, Regs, Stop};

/// Finds a `syscall` instruction (`0f 05`) in `text` mapped at `base`.
pub fn find_syscall_insn(base: u64, text: &[u8]) -> Option<u64> {
    text.windows(2).position(|w| w == [0x0f, 0x05]).map(|p| base + p as u64)
}

/// An injection session on one stopped thread.
pub struct Remote {
    pub tid: i32,
    saved: Regs,
    saved_mask: u64,
    syscall_ip: u64,
    mem: File,
    /// Tid of the thread created by the last injected clone3, if any.
    pub last_clone: Option<i32>,
    done: bool,
    /// A call was injected: the thread sits in the single step's SIGTRAP stop.
    stepped: bool,
}

impl Remote {
    /// Starts a session on `tid` (which must be in a ptrace stop), using the
    /// `syscall` instruction at `syscall_ip`; `pid` is its thread group.
    pub fn new(pid: i32, tid: i32, syscall_ip: u64) -> io::Result<Self> {
        let saved = ptrace::get_regs(tid)?;
        let saved_mask = ptrace::get_sigmask(tid)?;
        ptrace::set_sigmask(tid, !0u64)?;
        let mem = File::options().read(true).write(true).open(format!("/proc/{pid}/task/{tid}/mem"))?;
        Ok(Remote { tid, saved, saved_mask, syscall_ip, mem, last_clone: None, done: false, stepped: false })
    }

    pub fn saved_regs(&self) -> &Regs {
        &self.saved
    }

    /// Points later injections at a new `syscall` instruction (after the
    /// vdso moved).
    pub fn set_syscall_ip(&mut self, ip: u64) {
        self.syscall_ip = ip;
    }

    pub fn syscall_ip(&self) -> u64 {
        self.syscall_ip
    }

    /// Runs syscall `nr`; returns the raw kernel return value (negative errno on failure).
    pub fn syscall_raw(&mut self, nr: i64, args: &[u64]) -> io::Result<i64> {
        let mut r = self.saved;
        r.rax = nr as u64;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        r.rdi = a(0);
        r.rsi = a(1);
        r.rdx = a(2);
        r.r10 = a(3);
        r.r8 = a(4);
        r.r9 = a(5);
        r.rip = self.syscall_ip;
        r.orig_rax = u64::MAX;
        r.eflags &= !0x400; // DF
        ptrace::set_regs(self.tid, &r)?;
        ptrace::singlestep(self.tid)?;
        self.stepped = true;
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Stopped { sig: libc::SIGTRAP, event: ptrace::PTRACE_EVENT_CLONE } => {
                    self.last_clone = Some(ptrace::event_msg(self.tid)? as i32);
                    ptrace::singlestep(self.tid)?;
                }
                Stop::Stopped { sig: libc::SIGTRAP, event: 0 } => break,
                // A group-stop or interrupt notification: keep stepping.
                Stop::Stopped { event: ptrace::PTRACE_EVENT_STOP, .. } => ptrace::singlestep(self.tid)?,
                // Only unblockable signals get here; drop them while we own the thread.
                Stop::Stopped { .. } => ptrace::singlestep(self.tid)?,
                Stop::Exited(c) => return Err(io::Error::other(format!("thread {} exited ({c}) during injection", self.tid))),
                Stop::Signaled(s) => {
                    return Err(io::Error::other(format!("thread {} killed by signal {s} during injection", self.tid)))
                }
            }
        }
        Ok(ptrace::get_regs(self.tid)?.rax as i64)
    }

    /// Runs syscall `nr` and turns a negative return into an error.
    pub fn call(&mut self, nr: i64, args: &[u64]) -> io::Result<u64> {
        let r = self.syscall_raw(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(io::Error::from_raw_os_error(-r as i32));
        }
        Ok(r as u64)
    }

    /// Maps `len` bytes of anonymous read-write scratch memory in the task.
    pub fn mmap_scratch(&mut self, hint: u64, len: u64) -> io::Result<u64> {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64
            | if hint != 0 { libc::MAP_FIXED_NOREPLACE as u64 } else { 0 };
        self.call(libc::SYS_mmap, &[hint, len, (libc::PROT_READ | libc::PROT_WRITE) as u64, flags, u64::MAX, 0])
    }

    pub fn write_mem(&self, addr: u64, bytes: &[u8]) -> io::Result<()> {
        self.mem.write_all_at(bytes, addr)
    }

    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem.read_exact_at(buf, addr)
    }

    /// Ends the session, putting the thread's own registers and mask back
    /// and the thread in a `PTRACE_EVENT_STOP` (see the module doc).
    pub fn finish(mut self) -> io::Result<()> {
        self.done = true;
        ptrace::set_regs(self.tid, &self.saved)?;
        ptrace::set_sigmask(self.tid, self.saved_mask)?;
        self.park()
    }

    /// From the single step's SIGTRAP signal-delivery-stop into an interrupt
    /// stop: resumed with the SIGTRAP discarded and a `PTRACE_INTERRUPT`
    /// pending, the thread traps before it could run or dequeue a signal.
    fn park(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.stepped) {
            return Ok(()); // still in the stop the session started in
        }
        ptrace::interrupt(self.tid)?;
        ptrace::cont(self.tid, 0)?;
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Stopped { event: ptrace::PTRACE_EVENT_STOP, .. } => return Ok(()),
                // Not expected (the pending trap comes first); deliver, as seizing does.
                Stop::Stopped { sig, .. } => ptrace::cont(self.tid, sig)?,
                Stop::Exited(c) => return Err(io::Error::other(format!("thread {} exited ({c}) after injection", self.tid))),
                Stop::Signaled(s) => {
                    return Err(io::Error::other(format!("thread {} killed by signal {s} after injection", self.tid)))
                }
            }
        }
    }

    /// Ends the session without restoring anything (the caller sets the
    /// final registers itself).
    pub fn abandon(mut self) {
        self.done = true;
    }
}

impl Drop for Remote {
    /// A session dropped on an error path puts the thread back as it was.
    fn drop(&mut self) {
        if !self.done {
            let _ = ptrace::set_regs(self.tid, &self.saved);
            let _ = ptrace::set_sigmask(self.tid, self.saved_mask);
            let _ = self.park();
        }
    }
}
