//! Per-task state that is not memory or files: threads (registers, xsave,
//! signal mask and queue, rseq, altstack, robust list), signal handlers,
//! itimers, credentials, rlimits and the small prctl flags. Most comes from
//! `/proc` and ptrace; what exists only inside the task is read with one
//! injected syscall each into a scratch page.

use std::fs;

use crate::error::{Context, Error, Result};
use crate::model::{Creds, FsInfo, Itimer, PosixTimer, Rlimit, Rseq, SigAction, SigAltStack, ThreadImage};
use crate::proc::Status;
use crate::sys::inject::{Batch, Remote, BATCH_SCRATCH_LEN};
use crate::sys::ptrace;

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
pub const PR_GET_TID_ADDRESS: u64 = 40;

/// Registers as they must be restored: an interrupted syscall is set up to
/// be re-executed (or to return EINTR when its restart state lives in the
/// kernel), and `orig_rax = -1` so no restart logic applies again.
pub fn normalise_regs(mut r: ptrace::Regs) -> ptrace::Regs {
    let rax = r.rax as i64;
    if (r.orig_rax as i64) >= 0 {
        if [-ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND].contains(&rax) {
            r.rax = r.orig_rax;
            r.rip -= 2;
        } else if rax == -ERESTART_RESTARTBLOCK {
            r.rax = (-libc::EINTR as i64) as u64;
        }
    }
    r.orig_rax = u64::MAX;
    r
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

/// Registers and per-thread state readable from outside (no injection).
pub fn dump_thread_regs(pid: i32, tid: i32, vtid: i32) -> Result<ThreadImage> {
    let mut regs = ptrace::get_regs(tid).ctx(|| format!("read registers of thread {vtid}"))?;
    let xsave = ptrace::get_xstate(tid).ctx(|| format!("read xsave state of thread {vtid}"))?;
    let sigmask = ptrace::get_sigmask(tid).ctx(|| format!("read signal mask of thread {vtid}"))?;
    let pending = ptrace::peek_siginfo(tid, false).ctx(|| format!("read pending signals of thread {vtid}"))?;
    let cfg = ptrace::get_rseq(tid).ctx(|| format!("read rseq of thread {vtid}"))?;
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ctx(|| format!("open memory of {vtid}"))?;
    let rseq = if cfg.ptr != 0 {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        mem.read_exact_at(&mut b, cfg.ptr + 8).ctx(|| format!("read rseq area of thread {vtid}"))?;
        let mut cs = u64::from_le_bytes(b);
        if cs != 0 {
            // struct rseq_cs { u32 version, flags; u64 start_ip, post_commit_offset, abort_ip }
            let mut c = [0u8; 32];
            if mem.read_exact_at(&mut c, cs).is_ok() {
                let (start, len, abort) = (u64_at(&c, 1), u64_at(&c, 2), u64_at(&c, 3));
                if regs.rip >= start && regs.rip < start.wrapping_add(len) {
                    // Inside a critical section: resume at its abort handler, as the kernel would.
                    regs.rip = abort;
                    cs = 0;
                }
            }
        }
        Some(Rseq { ptr: cfg.ptr, len: cfg.size, sig: cfg.signature, flags: cfg.flags, cs })
    } else {
        None
    };
    let (robust_list, robust_list_len) = crate::sys::get_robust_list(tid).ctx(|| format!("read robust list of thread {vtid}"))?;
    let comm = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default().trim_end().to_string();
    Ok(ThreadImage {
        tid: vtid,
        regs: ptrace::regs_to_words(&normalise_regs(regs)),
        xsave,
        sigmask,
        pending,
        rseq,
        sigaltstack: SigAltStack::default(),
        clear_child_tid: 0,
        robust_list,
        robust_list_len,
        comm,
        seccomp: Vec::new(),
        sched: Default::default(),
        affinity: None,
    })
}

/// Process-wide state read by injection.
pub struct Injected {
    pub sigactions: Vec<SigAction>,
    pub brk: u64,
    pub itimers: [Itimer; 3],
    pub posix_timers: Vec<PosixTimer>,
    pub pdeath_signal: i32,
    pub child_subreaper: bool,
    pub dumpable: i32,
    pub securebits: u32,
    pub thp_disable: u32,
    pub membarrier: u32,
}

/// `membarrier` commands whose registration is saved: PRIVATE_EXPEDITED,
/// its SYNC_CORE and RSEQ variants. Each fails with EPERM in a process
/// that has not registered for it; registering is the command shifted
/// left by one.
pub const MEMBARRIER_CMDS: [u32; 3] = [8, 32, 128];
const PR_GET_THP_DISABLE: u64 = 42;
pub const PR_SET_THP_DISABLE: u64 = 41;

/// Runs the injected queries on the leader (`rs[0]`) and per-thread ones on
/// every thread, filling `threads`: one batch for the leader, one for each
/// other thread.
pub fn dump_injected(rs: &mut [Remote], status: &Status, threads: &mut [ThreadImage]) -> Result<Injected> {
    let vpid = threads[0].tid;
    let io = |e: std::io::Error, what: &str| Error::Io { context: format!("task {vpid}: {what}"), cause: e };
    let listed = fs::read_to_string(format!("/proc/{}/timers", rs[0].tid)).map_err(|e| io(e, "read POSIX timers"))?;
    let ptimers = crate::timers::parse(&listed).map_err(|what| Error::Unsupported { pid: vpid, what })?;
    let scratch = rs[0].map_batch_scratch(0).map_err(|e| io(e, "map scratch memory"))?;
    let result = (|| -> std::io::Result<Injected> {
        let mut b = Batch::new(&mut rs[0], scratch);
        let mut acts = Vec::new();
        for sig in 1..=64u64 {
            let bit = 1u64 << (sig - 1);
            if sig == 9 || sig == 19 || (status.sig_cgt | status.sig_ign) & bit == 0 {
                continue;
            }
            let out = b.output(32)?;
            b.call(libc::SYS_rt_sigaction, &[sig, 0, out, 8], format!("read the action of signal {sig}"))?;
            acts.push((sig, out));
        }
        let brk = b.call(libc::SYS_brk, &[0], "read brk")?;
        let mut timers = [0u64; 3];
        for (which, out) in timers.iter_mut().enumerate() {
            *out = b.output(32)?;
            b.call(libc::SYS_getitimer, &[which as u64, *out], "read itimer")?;
        }
        let mut ptimer_outs = Vec::with_capacity(ptimers.len());
        for t in &ptimers {
            let out = b.output(32)?;
            b.call(libc::SYS_timer_gettime, &[t.id as u64, out], format!("read POSIX timer {}", t.id))?;
            ptimer_outs.push(out);
        }
        let pdeath = b.output(4)?;
        b.call(libc::SYS_prctl, &[libc::PR_GET_PDEATHSIG as u64, pdeath], "read parent-death signal")?;
        let subreaper = b.output(4)?;
        b.call(libc::SYS_prctl, &[libc::PR_GET_CHILD_SUBREAPER as u64, subreaper], "read child subreaper")?;
        let dumpable = b.call(libc::SYS_prctl, &[libc::PR_GET_DUMPABLE as u64], "read dumpable")?;
        let securebits = b.call(libc::SYS_prctl, &[libc::PR_GET_SECUREBITS as u64], "read securebits")?;
        let thp = b.call(libc::SYS_prctl, &[PR_GET_THP_DISABLE], "read THP disable")?;
        let mut barriers = Vec::new();
        for cmd in MEMBARRIER_CMDS {
            barriers.push((cmd, b.call_tolerant(libc::SYS_membarrier, &[cmd as u64, 0, 0])?));
        }
        let leader_outs = thread_queries(&mut b)?;
        let res = b.finish()?;

        let leader = &rs[0];
        let mut sigactions = vec![SigAction::default(); 64];
        for (sig, out) in acts {
            let mut v = [0u8; 32];
            leader.read_mem(out, &mut v)?;
            sigactions[sig as usize - 1] =
                SigAction { handler: u64_at(&v, 0), flags: u64_at(&v, 1), restorer: u64_at(&v, 2), mask: u64_at(&v, 3) };
        }
        let mut itimers = [Itimer::default(); 3];
        for (it, out) in itimers.iter_mut().zip(timers) {
            let mut v = [0u8; 32];
            leader.read_mem(out, &mut v)?;
            *it = Itimer {
                interval_us: u64_at(&v, 0) * 1_000_000 + u64_at(&v, 1),
                value_us: u64_at(&v, 2) * 1_000_000 + u64_at(&v, 3),
            };
            // An expired ITIMER_REAL is re-armed only when its SIGALRM is
            // dequeued: while the signal is pending (it is, in the image)
            // the timer reads 0, and setitimer(0) would disarm it for good.
            // Re-arm one interval ahead.
            if it.value_us == 0 && it.interval_us != 0 {
                it.value_us = it.interval_us;
            }
        }
        let mut posix_timers = Vec::with_capacity(ptimers.len());
        for (p, out) in ptimers.iter().zip(ptimer_outs) {
            let mut v = [0u8; 32];
            leader.read_mem(out, &mut v)?;
            let (mut value_ns, interval_ns) = crate::timers::from_itimerspec(&v);
            // Expired, its signal still queued: re-armed on delivery (see
            // the itimers above).
            if value_ns == 0 && interval_ns != 0 {
                value_ns = interval_ns;
            }
            let tid = match p.notify {
                crate::timers::SIGEV_THREAD_ID => {
                    let i = rs.iter().position(|r| r.tid == p.target).ok_or_else(|| {
                        std::io::Error::other(format!("POSIX timer {} signals thread {}, not one of the process", p.id, p.target))
                    })?;
                    threads[i].tid
                }
                _ => 0,
            };
            posix_timers.push(PosixTimer { id: p.id, clock: p.clock, notify: p.notify, signal: p.signal, value: p.value, tid, value_ns, interval_ns });
        }
        let int_at = |at: u64| -> std::io::Result<i32> {
            let mut v = [0u8; 4];
            leader.read_mem(at, &mut v)?;
            Ok(i32::from_le_bytes(v))
        };
        let injected = Injected {
            sigactions,
            brk: res[brk] as u64,
            itimers,
            posix_timers,
            pdeath_signal: int_at(pdeath)?,
            child_subreaper: int_at(subreaper)? != 0,
            dumpable: res[dumpable] as i32,
            securebits: res[securebits] as u32,
            thp_disable: res[thp] as u32,
            membarrier: barriers.iter().filter(|(_, at)| res[*at] == 0).fold(0, |m, (cmd, _)| m | cmd),
        };
        read_thread(leader, leader_outs, &mut threads[0])?;
        for (r, t) in rs.iter_mut().zip(threads.iter_mut()).skip(1) {
            let mut b = Batch::new(r, scratch);
            let outs = thread_queries(&mut b)?;
            b.finish()?;
            read_thread(r, outs, t)?;
        }
        Ok(injected)
    })()
    .map_err(|e| io(e, "injected queries"));
    rs[0].call(libc::SYS_munmap, &[scratch, BATCH_SCRATCH_LEN]).map_err(|e| io(e, "unmap scratch memory"))?;
    result
}

/// Queues the per-thread queries (sigaltstack, tid address); returns where
/// their answers land.
fn thread_queries(b: &mut Batch) -> std::io::Result<(u64, u64)> {
    let ss = b.output(24)?;
    b.call(libc::SYS_sigaltstack, &[0, ss], "read sigaltstack")?;
    let tid_addr = b.output(8)?;
    b.call(libc::SYS_prctl, &[PR_GET_TID_ADDRESS, tid_addr], "read tid address")?;
    Ok((ss, tid_addr))
}

fn read_thread(r: &Remote, (ss, tid_addr): (u64, u64), t: &mut ThreadImage) -> std::io::Result<()> {
    let mut v = [0u8; 24];
    r.read_mem(ss, &mut v)?;
    t.sigaltstack = SigAltStack { sp: u64_at(&v, 0), flags: u64_at(&v, 1) as i32, size: u64_at(&v, 2) };
    let mut v = [0u8; 8];
    r.read_mem(tid_addr, &mut v)?;
    t.clear_child_tid = u64::from_le_bytes(v);
    Ok(())
}

pub fn creds_of(s: &Status, securebits: u32) -> Creds {
    Creds {
        uids: s.uids,
        gids: s.gids,
        groups: s.groups.clone(),
        cap_inh: s.cap_inh,
        cap_prm: s.cap_prm,
        cap_eff: s.cap_eff,
        cap_bnd: s.cap_bnd,
        cap_amb: s.cap_amb,
        securebits,
    }
}

/// Resource limits, from `/proc/<pid>/limits` (one row per resource, in
/// resource order): unlike `prlimit`, reading it needs no CAP_SYS_RESOURCE
/// when the task runs under another uid.
pub fn rlimits(pid: i32) -> Result<Vec<Rlimit>> {
    let path = format!("/proc/{pid}/limits");
    let text = fs::read_to_string(&path).ctx(|| format!("read rlimits of {pid}"))?;
    parse_limits(&text).ok_or_else(|| Error::Io { context: format!("read rlimits of {pid}"), cause: std::io::Error::other(format!("{path}: unexpected format")) })
}

fn parse_limits(text: &str) -> Option<Vec<Rlimit>> {
    let value = |s: &str| if s == "unlimited" { Some(libc::RLIM64_INFINITY) } else { s.parse().ok() };
    let mut v = Vec::with_capacity(16);
    // "Max open files            1024                 1048576              files"
    // (name in 26 columns, then soft and hard limits in 21 each).
    for (res, line) in (0..16u32).zip(text.lines().skip(1)) {
        let soft = line.get(26..)?.split_whitespace().next()?;
        let hard = line.get(47..)?.split_whitespace().next()?;
        v.push(Rlimit { resource: res, cur: value(soft)?, max: value(hard)? });
    }
    (v.len() == 16).then_some(v)
}

pub fn fs_info(pid: i32, umask: u32) -> Result<FsInfo> {
    let rl = |n: &str| -> Result<String> {
        Ok(fs::read_link(format!("/proc/{pid}/{n}")).ctx(|| format!("read {n} of {pid}"))?.to_string_lossy().into_owned())
    };
    Ok(FsInfo { cwd: rl("cwd")?, root: rl("root")?, umask })
}

pub fn read_num(path: &str) -> i64 {
    let s = fs::read_to_string(path).unwrap_or_default();
    let s = s.trim();
    i64::from_str_radix(s.trim_start_matches("0x"), if s.starts_with("0x") { 16 } else { 10 }).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_of_this_process_match_getrlimit() {
        let v = rlimits(std::process::id() as i32).expect("own limits");
        for r in v {
            let mut want = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: prlimit64 on ourselves with a null new limit only writes `want`.
            assert_eq!(unsafe { libc::prlimit64(0, r.resource as _, std::ptr::null(), &mut want) }, 0);
            assert_eq!((r.cur, r.max), (want.rlim_cur, want.rlim_max), "resource {}", r.resource);
        }
    }

    #[test]
    fn truncated_limits_are_refused() {
        let text = std::fs::read_to_string("/proc/self/limits").expect("read limits");
        let cut: Vec<&str> = text.lines().take(10).collect();
        assert!(parse_limits(&cut.join("\n")).is_none());
        assert!(parse_limits(&text.replace("unlimited", "lots")).is_none());
    }
}
