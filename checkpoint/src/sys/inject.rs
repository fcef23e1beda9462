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
//! microseconds of an injected call or batch remain exposed (a dump's
//! batches only read state; a restore's act on stubs that die with it).
//!
//! Every injected call costs a round trip between tracer and tracee (set
//! registers, step, wait, read registers), and a dump or restore makes
//! dozens per process. A [`Batch`] runs many calls for one round trip: a
//! few bytes of machine code on a page of its own walk a table of calls,
//! store each result, and stop at the first failure with an `int3`. The
//! code page is mapped read+execute and written through `/proc/pid/mem`,
//! the table and data read+write: no mapping is ever writable and
//! executable, so tasks under `PR_SET_MDWE` accept it too.
//!
//! ```text
//!  batch scratch (in the task)           table entry (80 bytes)
//!  +0        code page (r-x, 75 bytes)   +0  nr
//!  +4 KiB    area (rw-): table,          +8  args[0..6]
//!            BATCH_ENTRIES x 80          +56 result (written by the task)
//!  +68 KiB   data (paths, structs, out)  +64 flags (1: go on after an error)
//!  +260 KiB  end
//! ```

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

    /// Maps `len` bytes of anonymous scratch memory with `prot` in the task.
    fn mmap_scratch(&mut self, hint: u64, len: u64, prot: i32) -> io::Result<u64> {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64
            | if hint != 0 { libc::MAP_FIXED_NOREPLACE as u64 } else { 0 };
        self.call(libc::SYS_mmap, &[hint, len, prot as u64, flags, u64::MAX, 0])
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

/// The batch runner, hand-assembled (r12 = table, r13 = count):
///
/// ```text
///  0: test r13,r13 ; jz done
///     mov rax,[r12] ; mov rdi,[r12+8] ; mov rsi,[r12+16] ; mov rdx,[r12+24]
///     mov r10,[r12+32] ; mov r8,[r12+40] ; mov r9,[r12+48]
///     syscall
///     mov [r12+56],rax
///     cmp rax,-4095 ; jb ok            (unsigned: not an errno)
///     test qword [r12+64],1 ; jz done  (stop unless errors are tolerated)
/// ok: add r12,80 ; dec r13 ; jmp 0
/// done: int3
/// ```
const BATCH_CODE: [u8; 75] = [
    0x4d, 0x85, 0xed, 0x74, 0x45, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b, 0x74, 0x24, 0x10,
    0x49, 0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24,
    0x30, 0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x72, 0x0b, 0x49, 0xf7, 0x44,
    0x24, 0x40, 0x01, 0x00, 0x00, 0x00, 0x74, 0x09, 0x49, 0x83, 0xc4, 0x50, 0x49, 0xff, 0xcd, 0xeb, 0xb6, 0xcc,
];
const ENTRY_LEN: u64 = 80;
const CODE_LEN: u64 = 4096;
/// Offsets in the read-write area that follows the code page.
const TABLE_OFF: u64 = 0;
const DATA_OFF: u64 = 64 << 10;
const AREA_LEN: u64 = 256 << 10;
/// Size of the scratch memory a [`Batch`] needs: see [`Remote::map_batch_scratch`].
pub const BATCH_SCRATCH_LEN: u64 = CODE_LEN + AREA_LEN;
/// Where, in batch scratch memory, single calls may keep their arguments
/// between batches (the data area: 192 KiB).
pub const BATCH_FREE_OFF: u64 = CODE_LEN + DATA_OFF;
const BATCH_ENTRIES: usize = ((DATA_OFF - TABLE_OFF) / ENTRY_LEN) as usize;

struct Call {
    nr: i64,
    args: [u64; 6],
    tolerate: bool,
    what: String,
}

/// Calls queued for one thread, run in as few round trips as the table and
/// data area allow. Results come back in order from [`Batch::finish`]; the
/// first failing call (not marked tolerant) ends the batch with an error
/// naming it, and nothing after it runs.
pub struct Batch<'r> {
    r: &'r mut Remote,
    code: u64,
    area: u64,
    calls: Vec<Call>,
    data_len: u64,
    /// Data below this offset holds outputs: never recycled.
    kept: u64,
    results: Vec<i64>,
}

impl<'r> Batch<'r> {
    /// A batch for `r`'s thread, using the scratch memory at `scratch`
    /// made by [`Remote::map_batch_scratch`] in its process.
    pub fn new(r: &'r mut Remote, scratch: u64) -> Self {
        Batch { r, code: scratch, area: scratch + CODE_LEN, calls: Vec::new(), data_len: 0, kept: 0, results: Vec::new() }
    }

    /// Reserves `len` zeroed bytes for a call's output; returns their
    /// address, to read with [`Remote::read_mem`] after [`Batch::finish`].
    /// Outputs are never recycled: an error if the data area is full.
    pub fn output(&mut self, len: usize) -> io::Result<u64> {
        let len8 = (len as u64).next_multiple_of(8);
        if self.data_len + len8 > AREA_LEN - DATA_OFF {
            return Err(io::Error::other("the batch data area is full"));
        }
        let at = self.area + DATA_OFF + self.data_len;
        self.r.write_mem(at, &vec![0u8; len])?;
        self.data_len += len8;
        self.kept = self.data_len;
        Ok(at)
    }

    /// Copies `bytes` into the task; returns their address there, valid for
    /// the calls queued after it.
    pub fn put(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let len = (bytes.len() as u64).next_multiple_of(8);
        if self.kept + len > AREA_LEN - DATA_OFF {
            return Err(io::Error::other(format!("{} bytes of call data do not fit the batch area", bytes.len())));
        }
        if self.data_len + len > AREA_LEN - DATA_OFF {
            // Run what is queued: their data (not outputs) may be reused after that.
            self.flush()?;
            self.data_len = self.kept;
        }
        let at = self.area + DATA_OFF + self.data_len;
        self.r.write_mem(at, bytes)?;
        self.data_len += len;
        Ok(at)
    }

    /// Queues syscall `nr`; a failure ends the batch with `what` in the error.
    pub fn call(&mut self, nr: i64, args: &[u64], what: impl Into<String>) -> io::Result<usize> {
        self.push(nr, args, false, what.into())
    }

    /// Queues syscall `nr` whose failure is only recorded in its result.
    pub fn call_tolerant(&mut self, nr: i64, args: &[u64]) -> io::Result<usize> {
        self.push(nr, args, true, String::new())
    }

    fn push(&mut self, nr: i64, args: &[u64], tolerate: bool, what: String) -> io::Result<usize> {
        if self.calls.len() == BATCH_ENTRIES {
            self.flush()?; // the data area stays: queued data may belong to the next call
        }
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        self.calls.push(Call { nr, args: a, tolerate, what });
        Ok(self.results.len() + self.calls.len() - 1)
    }

    /// Runs everything queued; returns every call's raw result, in order.
    pub fn finish(mut self) -> io::Result<Vec<i64>> {
        self.flush()?;
        Ok(std::mem::take(&mut self.results))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let table = self.area + TABLE_OFF;
        let mut t = Vec::with_capacity(self.calls.len() * ENTRY_LEN as usize);
        for c in &self.calls {
            let words = [c.nr as u64, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4], c.args[5], 0, c.tolerate as u64, 0];
            t.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        }
        self.r.write_mem(table, &t)?;
        let left = self.r.run_code(self.code, table, self.calls.len() as u64)?;
        self.r.read_mem(table, &mut t)?;
        let ran = self.calls.len() - left as usize;
        for k in 0..ran {
            let at = k * ENTRY_LEN as usize + 56;
            self.results.push(i64::from_le_bytes(t[at..at + 8].try_into().expect("8 bytes")));
        }
        let calls = std::mem::take(&mut self.calls);
        if left != 0 {
            let at = ran * ENTRY_LEN as usize + 56;
            let rc = i64::from_le_bytes(t[at..at + 8].try_into().expect("8 bytes"));
            let e = io::Error::from_raw_os_error(-rc as i32);
            return Err(io::Error::new(e.kind(), format!("{}: {e}", calls[ran].what)));
        }
        Ok(())
    }
}

impl Remote {
    /// Maps [`BATCH_SCRATCH_LEN`] bytes of scratch memory for batches (at
    /// `hint` exactly, or anywhere when 0): the code page read+execute,
    /// filled through `/proc/pid/mem`, then the read-write area.
    pub fn map_batch_scratch(&mut self, hint: u64) -> io::Result<u64> {
        let base = self.mmap_scratch(hint, BATCH_SCRATCH_LEN, libc::PROT_READ | libc::PROT_EXEC)?;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let r = self.call(libc::SYS_mprotect, &[base + CODE_LEN, AREA_LEN, rw]).and_then(|_| self.write_mem(base, &BATCH_CODE));
        if let Err(e) = r {
            let _ = self.call(libc::SYS_munmap, &[base, BATCH_SCRATCH_LEN]);
            return Err(e);
        }
        Ok(base)
    }

    /// Runs the batch code at `code` over `count` entries at `table`;
    /// returns how many entries were left when it stopped (0: all ran).
    fn run_code(&mut self, code: u64, table: u64, count: u64) -> io::Result<u64> {
        let mut r = self.saved;
        r.rip = code;
        r.r12 = table;
        r.r13 = count;
        r.orig_rax = u64::MAX;
        r.eflags &= !0x400; // DF
        ptrace::set_regs(self.tid, &r)?;
        ptrace::cont(self.tid, 0)?;
        self.stepped = true;
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Stopped { sig: libc::SIGTRAP, event: 0 } => break,
                // A group-stop or interrupt notification, or an unblockable
                // signal: drop it while we own the thread.
                Stop::Stopped { .. } => ptrace::cont(self.tid, 0)?,
                Stop::Exited(c) => return Err(io::Error::other(format!("thread {} exited ({c}) during injection", self.tid))),
                Stop::Signaled(s) => {
                    return Err(io::Error::other(format!("thread {} killed by signal {s} during injection", self.tid)))
                }
            }
        }
        let after = ptrace::get_regs(self.tid)?;
        if after.rip != code + BATCH_CODE.len() as u64 {
            return Err(io::Error::other(format!("thread {}: batch stopped at {:#x}, not at its end", self.tid, after.rip)));
        }
        Ok(after.r13)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A `sleep` child, seized and stopped, with an injection session.
    struct Tracee {
        child: std::process::Child,
        pid: i32,
    }

    impl Tracee {
        fn start() -> (Tracee, Remote) {
            let child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
            let pid = child.id() as i32;
            ptrace::seize(pid, ptrace::PTRACE_O_EXITKILL).expect("seize");
            ptrace::interrupt(pid).expect("interrupt");
            loop {
                match ptrace::wait(pid).expect("wait") {
                    Stop::Stopped { event: ptrace::PTRACE_EVENT_STOP, .. } => break,
                    Stop::Stopped { sig, .. } => ptrace::cont(pid, sig).expect("cont"),
                    s => panic!("sleep died: {s:?}"),
                }
            }
            let maps = crate::proc::maps(pid).expect("maps");
            let vdso = maps.iter().find(|m| m.path == "[vdso]").expect("vdso");
            let mut text = vec![0u8; (vdso.end - vdso.start) as usize];
            crate::sys::vm_read(pid, vdso.start, &mut text).expect("read vdso");
            let ip = find_syscall_insn(vdso.start, &text).expect("syscall insn");
            let r = Remote::new(pid, pid, ip).expect("remote");
            (Tracee { child, pid }, r)
        }
    }

    impl Drop for Tracee {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn padded(path: &str, len: usize) -> Vec<u8> {
        let mut v = path.as_bytes().to_vec();
        v.resize(len, 0);
        v
    }

    #[test]
    fn batches_run_in_order_across_full_tables_and_data_areas() {
        let (t, mut r) = Tracee::start();
        let scratch = r.map_batch_scratch(0).expect("map batch scratch");
        let mut b = Batch::new(&mut r, scratch);
        // An output reserved first must survive the data area's recycling.
        let mask_at = b.output(8).unwrap();
        b.call(libc::SYS_rt_sigprocmask, &[libc::SIG_BLOCK as u64, 0, mask_at, 8], "read mask").unwrap();
        // More calls than a table holds, and more data than the area holds.
        let n = BATCH_ENTRIES * 2 + 5;
        let mut getpids = Vec::new();
        for _ in 0..n {
            getpids.push(b.call(libc::SYS_getpid, &[], "getpid").unwrap());
        }
        let mut opens = Vec::new();
        for _ in 0..100 {
            let at = b.put(&padded("/proc/self/status", 4096)).unwrap();
            opens.push(b.call(libc::SYS_openat, &[libc::AT_FDCWD as u64, at, libc::O_RDONLY as u64, 0], "open").unwrap());
        }
        let missing = b.put(&padded("/nonexistent/stasis", 64)).unwrap();
        let tolerated = b.call_tolerant(libc::SYS_openat, &[libc::AT_FDCWD as u64, missing, libc::O_RDONLY as u64, 0]).unwrap();
        let after = b.call(libc::SYS_getpid, &[], "getpid").unwrap();
        let res = b.finish().expect("batch");
        assert_eq!(res.len(), 1 + n + 100 + 2);
        assert!(getpids.iter().all(|&k| res[k] == t.pid as i64), "getpid results");
        assert!(opens.iter().all(|&k| res[k] >= 0), "opens: {:?}", opens.iter().map(|&k| res[k]).collect::<Vec<_>>());
        assert_eq!(res[tolerated], -(libc::ENOENT as i64));
        assert_eq!(res[after], t.pid as i64, "a tolerated failure goes on");
        let mut mask = [0u8; 8];
        r.read_mem(mask_at, &mut mask).unwrap();
        // Remote::new blocked everything that can be blocked; the traps of
        // single steps and of the batch's int3 unblock SIGTRAP (the
        // session's end puts the task's own mask back).
        let open = [libc::SIGKILL, libc::SIGSTOP, libc::SIGTRAP].iter().fold(0u64, |m, s| m | 1 << (s - 1));
        assert_eq!(u64::from_le_bytes(mask), !open);

        // A failing call ends the batch with its name; nothing after it runs.
        let mut b = Batch::new(&mut r, scratch);
        let missing = b.put(&padded("/nonexistent/stasis", 64)).unwrap();
        b.call(libc::SYS_openat, &[libc::AT_FDCWD as u64, missing, libc::O_RDONLY as u64, 0], "open the missing file").unwrap();
        b.call(libc::SYS_dup2, &[0, 900], "never").unwrap();
        let e = b.finish().expect_err("the open fails");
        assert!(e.to_string().starts_with("open the missing file: "), "{e}");
        assert_eq!(e.raw_os_error(), None);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!Path::new(&format!("/proc/{}/fd/900", t.pid)).exists(), "a call after the failure ran");
        r.finish().expect("finish session");
    }
}
