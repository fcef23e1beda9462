//! Turning a stub into the dumped process, driven over ptrace (engine note
//! §5.5, "option A"): the engine injects syscalls into the stopped stub to
//! drop its own mappings, move the kernel's vdso block to the dumped
//! address, map every dumped VMA, fill its pages ([`super::fill`]), set
//! the mm fields, creates the other threads with `clone3(set_tid)`,
//! restores per-thread state and credentials, and finally loads registers,
//! xsave state and signal masks. Nothing runs until the engine detaches.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Context, Error, Result};
use crate::image::PagesReader;
use crate::model::{Creds, ShmemKind, TaskImage, ThreadImage, TreeImage, Vma, VmaKind};
use crate::proc;
use crate::sys::inject::{find_syscall_insn, Batch, Remote, BATCH_FREE_OFF, BATCH_SCRATCH_LEN};
use crate::sys::ptrace::{self, Stop};

use super::fill::Filler;

/// Scratch memory: batches run from it; between them single injected
/// calls (thread creation, draining signals) keep their arguments in the
/// free part, at `scratch`.
const SCRATCH_LEN: u64 = BATCH_SCRATCH_LEN;
/// End of the x86_64 user address space (4-level paging).
const TASK_TOP: u64 = 0x7fff_ffff_f000;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

fn err(pid: i32, what: &str, e: std::io::Error) -> Error {
    Error::Io { context: format!("restore task {pid}: {what}"), cause: e }
}

/// Where the stub's vdso block is, and the dumped one.
struct Block {
    vvar: (u64, u64),
    vclock: Option<(u64, u64)>,
    vdso: (u64, u64),
}

impl Block {
    fn span(&self) -> (u64, u64) {
        (self.vvar.0, self.vdso.1)
    }
}

fn stub_block(maps: &[proc::MapEntry]) -> Option<Block> {
    let f = |n: &str| maps.iter().find(|m| m.path == n).map(|m| (m.start, m.end));
    Some(Block { vvar: f("[vvar]")?, vclock: f("[vvar_vclock]"), vdso: f("[vdso]")? })
}

fn image_block(vmas: &[Vma]) -> Option<Block> {
    let f = |k: VmaKind| vmas.iter().find(|v| v.kind == k).map(|v| (v.start, v.end));
    Some(Block { vvar: f(VmaKind::Vvar)?, vclock: f(VmaKind::VvarVclock), vdso: f(VmaKind::Vdso)? })
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// A free range of `len` bytes avoiding `busy` ranges, searched upward from 256 MiB.
fn find_hole(busy: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut v: Vec<(u64, u64)> = busy.to_vec();
    v.sort_unstable();
    let mut cur = 0x1000_0000u64;
    for (s, e) in v {
        if e <= cur {
            continue;
        }
        if s >= cur + len {
            return Some(cur);
        }
        cur = cur.max(e).next_multiple_of(0x10000);
    }
    (cur + len < 0x7fff_0000_0000).then_some(cur)
}

/// Context shared by all morphs of one restore.
pub struct Morph<'a> {
    pub tree: &'a TreeImage,
    pub pages: &'a PagesReader,
    /// Parent images' pages (`PageRun::parent` 1 is `parents[0]`).
    pub parents: &'a [PagesReader],
    /// Staging fd of each shmem object inside the tasks (memfds).
    pub shmem_fd: &'a [i32],
    /// First staging fd: everything from here up is closed at the end.
    pub base: i32,
    /// Pages filled with `UFFDIO_COPY` so far (all tasks).
    pub uffd_pages: std::sync::atomic::AtomicU64,
}

impl Morph<'_> {
    /// Rebuilds task `t` in the stopped stub `pid` (host pid). Returns the
    /// host tids of all its threads (leader first), stopped and ready.
    pub fn morph(&self, t: &TaskImage, pid: i32) -> Result<Vec<i32>> {
        let vpid = t.pid;
        let mm = t.mm.as_ref().ok_or_else(|| Error::Restore(format!("task {vpid} has no memory image")))?;
        let maps = proc::maps(pid).ctx(|| format!("read mappings of stub {vpid}"))?;
        let cur = stub_block(&maps).ok_or_else(|| Error::Restore(format!("stub {vpid} has no vdso")))?;
        let want = image_block(&mm.vmas).ok_or_else(|| Error::Restore(format!("task {vpid}: image has no vdso")))?;
        let size = |r: (u64, u64)| r.1 - r.0;
        if size(cur.vvar) != size(want.vvar)
            || size(cur.vdso) != size(want.vdso)
            || cur.vclock.map(size) != want.vclock.map(size)
        {
            return Err(Error::Restore(format!(
                "task {vpid}: the vdso layout of this kernel differs from the image's (dumped on another kernel?)"
            )));
        }
        let mut text = vec![0u8; size(cur.vdso) as usize];
        crate::sys::vm_read(pid, cur.vdso.0, &mut text).ctx(|| format!("read stub vdso of {vpid}"))?;
        let ip_off = find_syscall_insn(0, &text).ok_or_else(|| Error::Restore("no syscall instruction in vdso".into()))?;
        let mut r = Remote::new(pid, pid, cur.vdso.0 + ip_off).ctx(|| format!("start injection in stub {vpid}"))?;
        let e = |what: &'static str| move |x: std::io::Error| err(vpid, what, x);

        // 1. Drop the stub's glibc rseq registration, then all its memory but the vdso block.
        let rs = ptrace::get_rseq(pid).ctx(|| format!("read stub rseq of {vpid}"))?;
        if rs.ptr != 0 {
            r.call(libc::SYS_rseq, &[rs.ptr, rs.size as u64, RSEQ_FLAG_UNREGISTER, rs.signature as u64])
                .map_err(e("unregister stub rseq"))?;
        }
        // Two range unmaps cover everything below and above the vdso block
        // (holes inside a range are fine; [vsyscall] lies above user space).
        let keep = cur.span();
        let lowest = maps.iter().map(|m| m.start).min().unwrap_or(keep.0).min(keep.0);
        for (s, e2) in [(lowest, keep.0), (keep.1, TASK_TOP)] {
            if e2 > s {
                r.call(libc::SYS_munmap, &[s, e2 - s]).map_err(e("unmap stub memory"))?;
            }
        }

        // 2. Scratch memory in a hole of the final layout.
        let busy: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).chain([keep]).collect();
        let scratch_at = find_hole(&busy, SCRATCH_LEN).ok_or_else(|| Error::Restore("no room for scratch memory".into()))?;
        let area = r.map_batch_scratch(scratch_at).map_err(e("map scratch memory"))?;
        let scratch = area + BATCH_FREE_OFF;

        // 3. Move the vdso block (all three pieces by one delta, via a hole
        //    if needed) and open every mapped file and the executable.
        let mut b = Batch::new(&mut r, area);
        let mut at = cur;
        if at.vvar.0 != want.vvar.0 {
            if overlaps(at.span(), want.span()) {
                let taken: Vec<(u64, u64)> = busy.iter().copied().chain([(area, area + SCRATCH_LEN)]).collect();
                let hole = find_hole(&taken, size(at.span())).ok_or_else(|| Error::Restore("no room to move the vdso".into()))?;
                at = move_block(&mut b, &at, hole).map_err(e("move vdso"))?;
            }
            at = move_block(&mut b, &at, want.vvar.0).map_err(e("move vdso"))?;
        }
        let mut files: Vec<(String, bool)> = Vec::new();
        for v in &mm.vmas {
            if let VmaKind::File { path } = &v.kind {
                let key = (path.clone(), v.flags & libc::MAP_SHARED != 0 && v.prot & libc::PROT_WRITE != 0);
                if !files.contains(&key) {
                    files.push(key);
                }
            }
        }
        if !files.iter().any(|(p, rw)| p == &mm.exe && !rw) {
            files.push((mm.exe.clone(), false));
        }
        let mut slots = Vec::with_capacity(files.len());
        for (path, rw) in &files {
            slots.push(open_in(&mut b, path, if *rw { libc::O_RDWR } else { libc::O_RDONLY }).map_err(e("open mapped file"))?);
        }
        let res = b.finish().map_err(e("open mapped files"))?;
        let opened: HashMap<(String, bool), u64> = files.into_iter().zip(slots.iter().map(|&k| res[k] as u64)).collect();
        r.set_syscall_ip(at.vdso.0 + ip_off);

        // 4. Every dumped VMA with its hints (so that a huge-page VMA is
        //    filled with huge pages), then its pages.
        let mut b = Batch::new(&mut r, area);
        for v in &mm.vmas {
            self.map_vma(&mut b, v, &opened).map_err(e("map memory"))?;
            for &adv in &v.madvise {
                b.call(libc::SYS_madvise, &[v.start, v.end - v.start, adv as u64], format!("madvise {:#x}", v.start))
                    .map_err(e("madvise"))?;
            }
        }
        b.finish().map_err(e("map memory"))?;
        let mem = File::options().read(true).write(true).open(format!("/proc/{pid}/mem")).ctx(|| format!("open memory of {vpid}"))?;
        let filler = Filler::open(&mut r, pid, &mm.vmas);
        let filler_fd = filler.as_ref().map(|f| f.in_task);
        self.fill(pid, &mem, &mm.vmas, filler.as_ref())?;
        if let Some(f) = filler {
            f.close().ctx(|| format!("end the page fill of {vpid}"))?;
        }

        // 5. Signals queued by the stub phase (SIGCHLD of zombies) go.
        let st = proc::Status::read(&format!("/proc/{pid}/status")).ctx(|| format!("read status of stub {vpid}"))?;
        if st.sig_pnd != 0 || st.shd_pnd != 0 {
            drain_signals(&mut r, scratch).map_err(e("drain stub signals"))?;
        }

        // 6. In one batch: mm fields (brk, arg/env, auxv, exe), helper fds
        //    closed, file locks, the dumped signals and itimers, THP and
        //    membarrier registrations, the leader's
        //    per-thread state and, when it is alone, its POSIX timers and
        //    credentials.
        let single = t.threads.len() == 1;
        let mut b = Batch::new(&mut r, area);
        let auxv: Vec<u8> = mm.auxv.iter().take(2 * 52).flat_map(|w| w.to_le_bytes()).collect();
        let auxv_at = b.put(&auxv).map_err(e("write auxv"))?;
        let exe_fd = opened[&(mm.exe.clone(), false)];
        let mut buf: Vec<u8> = [
            mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk, mm.brk, mm.start_stack,
            mm.arg_start, mm.arg_end, mm.env_start, mm.env_end, auxv_at,
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
        buf.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(exe_fd as u32).to_le_bytes());
        let map_at = b.put(&buf).map_err(e("write mm map"))?;
        b.call(libc::SYS_prctl, &[PR_SET_MM, PR_SET_MM_MAP, map_at, buf.len() as u64, 0], "set mm fields").map_err(e("mm"))?;
        for v in mm.vmas.iter().filter(|v| v.map_prot() != v.prot) {
            b.call(libc::SYS_mprotect, &[v.start, v.end - v.start, v.prot as u64], format!("protect {:#x}", v.start))
                .map_err(e("mprotect"))?;
        }
        // Locks last: the pages are in (a lock would fault in the ones the
        // image does not hold).
        for v in mm.vmas.iter().filter(|v| v.mlock != 0) {
            let onfault = u64::from(v.mlock == crate::model::MLOCK_ON_FAULT);
            b.call(libc::SYS_mlock2, &[v.start, v.end - v.start, onfault], format!("lock {:#x}", v.start)).map_err(e("mlock"))?;
        }
        for &fd in opened.values().chain(filler_fd.as_ref()) {
            b.call(libc::SYS_close, &[fd], "close helper fd").map_err(e("close"))?;
        }
        b.call(libc::SYS_close_range, &[self.base as u64, u32::MAX as u64, 0], "close staging fds").map_err(e("close"))?;
        // Only now: those closes would have dropped POSIX locks.
        crate::locks::take(&mut b, t).map_err(e("file locks"))?;
        for si in &t.shared_pending {
            let a = b.put(si).map_err(e("write siginfo"))?;
            b.call(libc::SYS_rt_sigqueueinfo, &[vpid as u64, si_signo(si), a], "queue signal").map_err(e("signal"))?;
        }
        for (which, it) in t.itimers.iter().enumerate() {
            if it.value_us == 0 && it.interval_us == 0 {
                continue;
            }
            let v = [it.interval_us / 1_000_000, it.interval_us % 1_000_000, it.value_us / 1_000_000, it.value_us % 1_000_000];
            let a = b.put(&v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()).map_err(e("write itimer"))?;
            b.call(libc::SYS_setitimer, &[which as u64, a, 0], "set itimer").map_err(e("itimer"))?;
        }
        if t.thp_disable & 1 != 0 {
            let except_advised = u64::from(t.thp_disable & 2);
            b.call(libc::SYS_prctl, &[crate::task::PR_SET_THP_DISABLE, 1, except_advised, 0, 0], "disable THP").map_err(e("prctl"))?;
        }
        for cmd in crate::task::MEMBARRIER_CMDS.iter().filter(|&&c| t.membarrier & c != 0) {
            b.call(libc::SYS_membarrier, &[(cmd << 1) as u64, 0, 0], format!("register for membarrier command {cmd}"))
                .map_err(e("membarrier"))?;
        }
        thread_state(&mut b, vpid, &t.threads[0]).map_err(e("thread state"))?;
        if single {
            crate::timers::restore(&mut b, &t.posix_timers).map_err(e("POSIX timers"))?;
            last_steps(&mut b, t, &t.threads[0]).map_err(e("credentials"))?;
            set_dumpable(&mut b, t).map_err(e("dumpable"))?;
        }
        b.finish().map_err(|x| err(vpid, "finish", x))?;

        // 7. Other threads, created with their tids (before any seccomp
        //    filter: a new thread inherits its creator's), then for every
        //    thread its state, filters and credentials (the leader first
        //    creates the POSIX timers, which may signal any thread).
        ptrace::set_options(pid, ptrace::PTRACE_O_TRACECLONE | ptrace::PTRACE_O_EXITKILL | ptrace::PTRACE_O_SUSPEND_SECCOMP)
            .ctx(|| "set ptrace options".into())?;
        let mut remotes = vec![];
        let mut tids = vec![pid];
        for th in t.threads.iter().skip(1) {
            let tid = spawn_thread(&mut r, scratch, th).map_err(e("create thread"))?;
            tids.push(tid);
            let ip = r.syscall_ip();
            remotes.push(Remote::new(pid, tid, ip).ctx(|| format!("start injection in thread {}", th.tid))?);
        }
        remotes.insert(0, r);
        if !single {
            for (k, (rm, th)) in remotes.iter_mut().zip(&t.threads).enumerate() {
                let mut b = Batch::new(rm, area);
                if k > 0 {
                    thread_state(&mut b, vpid, th).map_err(e("thread state"))?;
                } else {
                    // Now that every thread a timer may signal exists.
                    crate::timers::restore(&mut b, &t.posix_timers).map_err(e("POSIX timers"))?;
                }
                last_steps(&mut b, t, th).map_err(e("credentials"))?;
                b.finish().map_err(|x| err(vpid, &format!("thread {}", th.tid), x))?;
            }
            let mut b = Batch::new(&mut remotes[0], area);
            set_dumpable(&mut b, t).map_err(e("dumpable"))?;
            b.finish().map_err(e("dumpable"))?;
        }
        remotes[0].call(libc::SYS_munmap, &[area, SCRATCH_LEN]).map_err(e("unmap scratch memory"))?;

        // 8. Final CPU state, scheduling policy and timer slack.
        for (rm, th) in remotes.into_iter().zip(&t.threads) {
            let tid = rm.tid;
            rm.abandon();
            let regs = ptrace::words_to_regs(&th.regs).ok_or_else(|| Error::Restore("bad register set".into()))?;
            ptrace::set_regs(tid, &regs).ctx(|| format!("set registers of thread {}", th.tid))?;
            ptrace::set_xstate(tid, &th.xsave).ctx(|| format!("set xsave state of thread {}", th.tid))?;
            ptrace::set_sigmask(tid, th.sigmask).ctx(|| format!("set signal mask of thread {}", th.tid))?;
            crate::sched::restore(tid, &th.sched)?;
            if let Some(cpus) = &th.affinity {
                crate::sched::restore_affinity(tid, cpus)?;
            }
            if let Some(rs) = th.rseq.filter(|r| r.cs != 0) {
                mem.write_all_at(&rs.cs.to_le_bytes(), rs.ptr + 8).ctx(|| "restore rseq_cs".into())?;
            }
        }
        Ok(tids)
    }

    fn map_vma(&self, b: &mut Batch, v: &Vma, opened: &HashMap<(String, bool), u64>) -> std::io::Result<()> {
        let len = v.end - v.start;
        let fixed = libc::MAP_FIXED as u64;
        let what = format!("map {:#x}-{:#x}", v.start, v.end);
        match &v.kind {
            VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vdso => Ok(()),
            VmaKind::Anon => {
                let flags = (v.flags | libc::MAP_ANONYMOUS) as u64 | fixed;
                b.call(libc::SYS_mmap, &[v.start, len, v.map_prot() as u64, flags, u64::MAX, 0], what).map(drop)
            }
            VmaKind::File { path } => {
                let rw = v.flags & libc::MAP_SHARED != 0 && v.prot & libc::PROT_WRITE != 0;
                let fd = *opened.get(&(path.clone(), rw)).ok_or_else(|| std::io::Error::other(format!("{path} was not opened")))?;
                b.call(libc::SYS_mmap, &[v.start, len, v.map_prot() as u64, v.flags as u64 | fixed, fd, v.pgoff], format!("{what} ({path})"))
                    .map(drop)
            }
            VmaKind::Shmem { id } => {
                let obj = self.tree.shmem.get(*id as usize).ok_or_else(|| std::io::Error::other("unknown shmem"))?;
                if let ShmemKind::SysV { shmid, .. } = obj.kind {
                    let mut fl = 0u64;
                    if v.prot & libc::PROT_WRITE == 0 {
                        fl |= libc::SHM_RDONLY as u64;
                    }
                    if v.prot & libc::PROT_EXEC != 0 {
                        fl |= libc::SHM_EXEC as u64;
                    }
                    return b.call(libc::SYS_shmat, &[shmid as u64, v.start, fl], what).map(drop);
                }
                let fd = self.shmem_fd[*id as usize] as u64;
                b.call(libc::SYS_mmap, &[v.start, len, v.prot as u64, libc::MAP_SHARED as u64 | fixed, fd, v.pgoff], what).map(drop)
            }
        }
    }
}

fn move_block(b: &mut Batch, from: &Block, to: u64) -> std::io::Result<Block> {
    let delta = to.wrapping_sub(from.vvar.0);
    let mut mv = |(s, e): (u64, u64)| -> std::io::Result<(u64, u64)> {
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        b.call(libc::SYS_mremap, &[s, e - s, e - s, flags, s.wrapping_add(delta)], "move the vdso block")?;
        Ok((s.wrapping_add(delta), e.wrapping_add(delta)))
    };
    // (The batch runs from scratch memory: moving the vdso's syscall
    // instruction is fine; the caller points single calls at the new one.)
    let vvar = mv(from.vvar)?;
    let vclock = match from.vclock {
        Some(c) => Some(mv(c)?),
        None => None,
    };
    let vdso = mv(from.vdso)?;
    Ok(Block { vvar, vclock, vdso })
}

/// Queues `openat(AT_FDCWD, path, flags)`; returns its slot in the batch's results.
fn open_in(b: &mut Batch, path: &str, flags: i32) -> std::io::Result<usize> {
    let mut p = path.as_bytes().to_vec();
    if p.len() >= 4096 || p.contains(&0) {
        return Err(std::io::Error::other(format!("bad path {path:?}")));
    }
    p.push(0);
    let at = b.put(&p)?;
    b.call(libc::SYS_openat, &[libc::AT_FDCWD as u64, at, (flags | libc::O_CLOEXEC) as u64, 0], format!("open {path}"))
}

fn si_signo(si: &[u8]) -> u64 {
    si.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64).unwrap_or(0)
}

fn drain_signals(r: &mut Remote, scratch: u64) -> std::io::Result<()> {
    // sigset (all), then a zero timespec.
    let mut b = vec![0xffu8; 8];
    b.extend_from_slice(&[0u8; 16]);
    r.write_mem(scratch + 8192, &b)?;
    for _ in 0..128 {
        let n = r.syscall_raw(libc::SYS_rt_sigtimedwait, &[scratch + 8192, 0, scratch + 8200, 8])?;
        if n < 0 {
            break;
        }
    }
    Ok(())
}

fn spawn_thread(r: &mut Remote, scratch: u64, th: &ThreadImage) -> std::io::Result<i32> {
    // struct clone_args, then the set_tid array.
    let tid_at = scratch + 12288 + 128;
    let args: [u64; 11] = [THREAD_FLAGS, 0, 0, 0, 0, 0, 0, 0, tid_at, 1, 0];
    let b: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
    r.write_mem(scratch + 12288, &b)?;
    r.write_mem(tid_at, &(th.tid as u32).to_le_bytes())?;
    r.last_clone = None;
    r.call(libc::SYS_clone3, &[scratch + 12288, 88])?;
    let tid = r.last_clone.ok_or_else(|| std::io::Error::other("clone3 reported no new thread"))?;
    match ptrace::wait(tid)? {
        Stop::Stopped { .. } => Ok(tid),
        s => Err(std::io::Error::other(format!("new thread {tid}: {s:?}"))),
    }
}

/// Queues the per-thread state of `th` (thread of process `vpid`) and the
/// signals pending for it alone, which it queues to itself.
fn thread_state(b: &mut Batch, vpid: i32, th: &ThreadImage) -> std::io::Result<()> {
    if th.robust_list != 0 {
        b.call(libc::SYS_set_robust_list, &[th.robust_list, th.robust_list_len], "set robust list")?;
    }
    b.call(libc::SYS_set_tid_address, &[th.clear_child_tid], "set tid address")?;
    let ss = &th.sigaltstack;
    if ss.flags & libc::SS_DISABLE == 0 && ss.size != 0 {
        let v: Vec<u8> = [ss.sp, (ss.flags & !libc::SS_ONSTACK) as u64, ss.size].iter().flat_map(|w| w.to_le_bytes()).collect();
        let at = b.put(&v)?;
        b.call(libc::SYS_sigaltstack, &[at, 0], "set signal stack")?;
    }
    if let Some(rs) = th.rseq {
        b.call(libc::SYS_rseq, &[rs.ptr, rs.len as u64, 0, rs.sig as u64], "register rseq")?;
    }
    if !th.comm.is_empty() {
        let mut name = th.comm.as_bytes()[..th.comm.len().min(15)].to_vec();
        name.push(0);
        let at = b.put(&name)?;
        b.call(libc::SYS_prctl, &[libc::PR_SET_NAME as u64, at], "set thread name")?;
    }
    for si in &th.pending {
        let at = b.put(si)?;
        b.call(libc::SYS_rt_tgsigqueueinfo, &[vpid as u64, th.tid as u64, si_signo(si), at], "queue thread signal")?;
    }
    Ok(())
}

/// Queues the installation of `filters` (oldest first) in the batch's thread.
fn install_seccomp(b: &mut Batch, filters: &[Vec<u8>]) -> std::io::Result<()> {
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    for f in filters {
        if f.len() % 8 != 0 || f.len() / 8 > 4096 {
            return Err(std::io::Error::other("bad seccomp filter"));
        }
        let insns_at = b.put(f)?;
        // struct sock_fprog { u16 len; (pad); struct sock_filter *filter }
        let mut prog = vec![0u8; 16];
        prog[..2].copy_from_slice(&((f.len() / 8) as u16).to_le_bytes());
        prog[8..].copy_from_slice(&insns_at.to_le_bytes());
        let prog_at = b.put(&prog)?;
        b.call(libc::SYS_seccomp, &[SECCOMP_SET_MODE_FILTER, 0, prog_at], "install seccomp filter")?;
    }
    Ok(())
}

/// The last steps of a thread: its seccomp filters, then its credentials
/// (installing a filter needs CAP_SYS_ADMIN or no_new_privs, and engines
/// such as podman run containers with filters but with neither: only the
/// stub's capabilities allow it). Later injections are not filtered:
/// seccomp is suspended for tracees.
fn last_steps(b: &mut Batch, t: &TaskImage, th: &ThreadImage) -> std::io::Result<()> {
    install_seccomp(b, &th.seccomp)?;
    restore_creds(b, &t.creds, t.no_new_privs)
}

/// Queues the dumpable flag: after every thread's credentials, whose
/// change of ids resets it.
fn set_dumpable(b: &mut Batch, t: &TaskImage) -> std::io::Result<()> {
    if t.dumpable != 1 {
        b.call(libc::SYS_prctl, &[libc::PR_SET_DUMPABLE as u64, t.dumpable as u64], "set dumpable")?;
    }
    Ok(())
}

/// Credentials last, per thread: bounding set, groups and ids with
/// capabilities kept across the uid change, then the capability sets.
fn restore_creds(b: &mut Batch, c: &Creds, nnp: bool) -> std::io::Result<()> {
    let full = (1u64 << 41) - 1;
    let root = c.uids == [0; 4] && c.gids == [0; 4];
    let all_caps = c.cap_eff & full == full && c.cap_prm & full == full && c.cap_bnd & full == full;
    if !(root && all_caps && c.cap_amb == 0 && c.cap_inh == 0 && c.groups.is_empty()) {
        for cap in 0..64u64 {
            if c.cap_bnd & (1 << cap) == 0 {
                // Capabilities this kernel does not know fail: fine.
                b.call_tolerant(libc::SYS_prctl, &[libc::PR_CAPBSET_DROP as u64, cap])?;
            }
        }
        b.call(libc::SYS_prctl, &[libc::PR_SET_SECUREBITS as u64, (c.securebits | 0x10) as u64], "set securebits")?;
        let g: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        let groups_at = b.put(&g)?;
        b.call(libc::SYS_setgroups, &[c.groups.len() as u64, groups_at], "set groups")?;
        b.call(libc::SYS_setresgid, &[c.gids[0] as u64, c.gids[1] as u64, c.gids[2] as u64], "set gids")?;
        b.call(libc::SYS_setfsgid, &[c.gids[3] as u64], "set fsgid")?;
        b.call(libc::SYS_setresuid, &[c.uids[0] as u64, c.uids[1] as u64, c.uids[2] as u64], "set uids")?;
        b.call(libc::SYS_setfsuid, &[c.uids[3] as u64], "set fsuid")?;
        // struct __user_cap_header_struct { u32 version = 3, int pid = 0 }, then 2 x { eff, prm, inh }.
        let lo = |x: u64| (x & 0xffff_ffff) as u32;
        let hi = |x: u64| (x >> 32) as u32;
        let words: [u32; 8] = [0x2008_0522, 0, lo(c.cap_eff), lo(c.cap_prm), lo(c.cap_inh), hi(c.cap_eff), hi(c.cap_prm), hi(c.cap_inh)];
        let caps_at = b.put(&words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>())?;
        b.call(libc::SYS_capset, &[caps_at, caps_at + 8], "set capabilities")?;
        // The final securebits need CAP_SETPCAP; without it the only
        // difference left is the keep-caps bit set above, which
        // PR_SET_KEEPCAPS may clear (or the task had it set anyway).
        const CAP_SETPCAP: u64 = 8;
        if c.cap_eff & (1 << CAP_SETPCAP) != 0 {
            b.call(libc::SYS_prctl, &[libc::PR_SET_SECUREBITS as u64, c.securebits as u64], "set securebits")?;
        } else if c.securebits & 0x10 == 0 {
            b.call(libc::SYS_prctl, &[libc::PR_SET_KEEPCAPS as u64, 0], "clear keep-caps")?;
        }
        for cap in 0..64u64 {
            if c.cap_amb & (1 << cap) != 0 {
                b.call(libc::SYS_prctl, &[libc::PR_CAP_AMBIENT as u64, libc::PR_CAP_AMBIENT_RAISE as u64, cap, 0, 0], "raise ambient capability")?;
            }
        }
    }
    if nnp {
        b.call(libc::SYS_prctl, &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0], "set no_new_privs")?;
    }
    Ok(())
}
