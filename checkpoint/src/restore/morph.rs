//! Turning a stub into the dumped process, driven over ptrace (engine note
//! §5.5, "option A"): the engine injects syscalls into the stopped stub to
//! drop its own mappings, move the kernel's vdso block to the dumped
//! address, map every dumped VMA, fills pages through `/proc/pid/mem`, sets
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
use crate::sys::inject::{find_syscall_insn, Remote};
use crate::sys::ptrace::{self, Stop};

const SCRATCH_LEN: u64 = 64 << 10;
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
}

impl Morph<'_> {
    /// Rebuilds task `t` in the stopped stub `pid` (host pid). Returns the
    /// host tids of all its threads (leader first), stopped and ready.
    pub fn morph(&self, t: &TaskImage, pid: i32) -> Result<Vec<i32>> {
        let vpid = t.pid;
        let mm = t.mm.as_ref().ok_or_else(|| Error::Restore(format!("task {vpid} has no memory image")))?;
        let maps = proc::smaps(pid).ctx(|| format!("read mappings of stub {vpid}"))?;
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

        // 2. Move the vdso block (all three pieces by one delta), via a hole if needed.
        let busy: Vec<(u64, u64)> = mm.vmas.iter().map(|v| (v.start, v.end)).chain([keep]).collect();
        let mut at = cur;
        if at.vvar.0 != want.vvar.0 {
            if overlaps(at.span(), want.span()) {
                let hole = find_hole(&busy, size(at.span())).ok_or_else(|| Error::Restore("no room to move the vdso".into()))?;
                at = move_block(&mut r, &at, hole).map_err(e("move vdso"))?;
            }
            at = move_block(&mut r, &at, want.vvar.0).map_err(e("move vdso"))?;
        }
        r.set_syscall_ip(at.vdso.0 + ip_off);

        // 3. Scratch memory for syscall arguments, in a hole of the final layout.
        let scratch_at = find_hole(&busy, SCRATCH_LEN).ok_or_else(|| Error::Restore("no room for scratch memory".into()))?;
        let scratch = r.mmap_scratch(scratch_at, SCRATCH_LEN).map_err(e("map scratch memory"))?;

        // 4. Every dumped VMA, then its pages.
        let mut opened: HashMap<(String, bool), u64> = HashMap::new();
        for v in &mm.vmas {
            self.map_vma(&mut r, scratch, v, &mut opened).map_err(|x| err(vpid, &format!("map {:#x}-{:#x}", v.start, v.end), x))?;
            // Hints first, so a huge-page VMA is filled with huge pages.
            for &adv in &v.madvise {
                r.call(libc::SYS_madvise, &[v.start, v.end - v.start, adv as u64]).map_err(e("madvise"))?;
            }
        }
        let mem = File::options().read(true).write(true).open(format!("/proc/{pid}/mem")).ctx(|| format!("open memory of {vpid}"))?;
        self.fill(pid, &mem, &mm.vmas)?;

        // 5. mm fields (brk, arg/env, auxv, exe), then close helper fds.
        // The executable is usually mapped already: reuse that fd.
        let (exe_fd, exe_opened) = match opened.get(&(mm.exe.clone(), false)) {
            Some(fd) => (*fd, false),
            None => (open_in(&mut r, scratch, &mm.exe, libc::O_RDONLY).map_err(e("open executable"))?, true),
        };
        let mut map = Vec::with_capacity(13);
        map.extend_from_slice(&[
            mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk, mm.brk, mm.start_stack,
            mm.arg_start, mm.arg_end, mm.env_start, mm.env_end,
        ]);
        let auxv: Vec<u8> = mm.auxv.iter().take(2 * 52).flat_map(|w| w.to_le_bytes()).collect();
        map.push(scratch + 512);
        let mut buf: Vec<u8> = map.iter().flat_map(|w| w.to_le_bytes()).collect();
        buf.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(exe_fd as u32).to_le_bytes());
        r.write_mem(scratch, &buf).map_err(e("write mm map"))?;
        r.write_mem(scratch + 512, &auxv).map_err(e("write auxv"))?;
        r.call(libc::SYS_prctl, &[PR_SET_MM, PR_SET_MM_MAP, scratch, buf.len() as u64, 0]).map_err(e("set mm fields"))?;
        for fd in opened.values().copied().chain(exe_opened.then_some(exe_fd)) {
            r.call(libc::SYS_close, &[fd]).map_err(e("close helper fd"))?;
        }
        r.call(libc::SYS_close_range, &[self.base as u64, u32::MAX as u64, 0]).map_err(e("close staging fds"))?;

        // 6. Signals queued by the stub phase (SIGCHLD of zombies) go; the dumped ones come back.
        let st = proc::Status::read(&format!("/proc/{pid}/status")).ctx(|| format!("read status of stub {vpid}"))?;
        if st.sig_pnd != 0 || st.shd_pnd != 0 {
            drain_signals(&mut r, scratch).map_err(e("drain stub signals"))?;
        }
        for si in &t.shared_pending {
            let sig = si_signo(si);
            r.write_mem(scratch, si).map_err(e("write siginfo"))?;
            r.call(libc::SYS_rt_sigqueueinfo, &[vpid as u64, sig, scratch]).map_err(e("queue signal"))?;
        }
        for (which, it) in t.itimers.iter().enumerate() {
            if it.value_us == 0 && it.interval_us == 0 {
                continue;
            }
            let v = [it.interval_us / 1_000_000, it.interval_us % 1_000_000, it.value_us / 1_000_000, it.value_us % 1_000_000];
            let b: Vec<u8> = v.iter().flat_map(|w| w.to_le_bytes()).collect();
            r.write_mem(scratch, &b).map_err(e("write itimer"))?;
            r.call(libc::SYS_setitimer, &[which as u64, scratch, 0]).map_err(e("set itimer"))?;
        }

        // 7. Threads: the leader's per-thread state, then each other thread, created with its tid.
        ptrace::set_options(pid, ptrace::PTRACE_O_TRACECLONE | ptrace::PTRACE_O_EXITKILL | ptrace::PTRACE_O_SUSPEND_SECCOMP)
            .ctx(|| "set ptrace options".into())?;
        let mut remotes = vec![];
        let mut tids = vec![pid];
        for (i, th) in t.threads.iter().enumerate() {
            if i == 0 {
                continue;
            }
            let tid = spawn_thread(&mut r, scratch, th).map_err(e("create thread"))?;
            tids.push(tid);
            let ip = r.syscall_ip();
            remotes.push(Remote::new(pid, tid, ip).ctx(|| format!("start injection in thread {}", th.tid))?);
        }
        remotes.insert(0, r);
        for (rm, th) in remotes.iter_mut().zip(&t.threads) {
            thread_state(rm, scratch, th).map_err(|x| err(vpid, &format!("thread {} state", th.tid), x))?;
            // Signals pending for this thread only, queued by the thread to itself.
            for si in &th.pending {
                rm.write_mem(scratch, si).map_err(e("write siginfo"))?;
                rm.call(libc::SYS_rt_tgsigqueueinfo, &[vpid as u64, th.tid as u64, si_signo(si), scratch])
                    .map_err(e("queue thread signal"))?;
            }
        }
        // Seccomp filters before the credentials: installing a filter needs
        // CAP_SYS_ADMIN or no_new_privs, and engines such as podman run
        // containers with a filter, without no_new_privs and without
        // CAP_SYS_ADMIN, so only the stub's full capabilities allow it. Our
        // later injections are not filtered (seccomp is suspended for tracees).
        for (rm, th) in remotes.iter_mut().zip(&t.threads) {
            install_seccomp(rm, scratch, &th.seccomp).map_err(|x| err(vpid, &format!("seccomp filters of thread {}", th.tid), x))?;
        }
        for rm in remotes.iter_mut() {
            restore_creds(rm, scratch, &t.creds, t.no_new_privs).map_err(e("credentials"))?;
        }
        if t.dumpable != 1 {
            remotes[0].call(libc::SYS_prctl, &[libc::PR_SET_DUMPABLE as u64, t.dumpable as u64]).map_err(e("set dumpable"))?;
        }
        remotes[0].call(libc::SYS_munmap, &[scratch, SCRATCH_LEN]).map_err(e("unmap scratch memory"))?;

        // 8. Final CPU state.
        for (rm, th) in remotes.into_iter().zip(&t.threads) {
            let tid = rm.tid;
            rm.abandon();
            let regs = ptrace::words_to_regs(&th.regs).ok_or_else(|| Error::Restore("bad register set".into()))?;
            ptrace::set_regs(tid, &regs).ctx(|| format!("set registers of thread {}", th.tid))?;
            ptrace::set_xstate(tid, &th.xsave).ctx(|| format!("set xsave state of thread {}", th.tid))?;
            ptrace::set_sigmask(tid, th.sigmask).ctx(|| format!("set signal mask of thread {}", th.tid))?;
            if let Some(rs) = th.rseq.filter(|r| r.cs != 0) {
                mem.write_all_at(&rs.cs.to_le_bytes(), rs.ptr + 8).ctx(|| "restore rseq_cs".into())?;
            }
        }
        Ok(tids)
    }

    /// Writes every dumped page into the task, on two threads: each run is
    /// checksum-verified, then copied with `process_vm_writev` (or through
    /// `/proc/pid/mem`, which may write into read-only private mappings).
    fn fill(&self, pid: i32, mem: &File, vmas: &[Vma]) -> Result<()> {
        let mut runs: Vec<(&crate::model::PageRun, bool)> =
            vmas.iter().flat_map(|v| v.pages.iter().map(move |r| (r, v.prot & libc::PROT_WRITE != 0))).collect();
        runs.sort_by_key(|(r, _)| std::cmp::Reverse(r.data.len));
        let mut halves: [(u64, Vec<(&crate::model::PageRun, bool)>); 2] = [(0, Vec::new()), (0, Vec::new())];
        for x in runs {
            let h = if halves[0].0 <= halves[1].0 { 0 } else { 1 };
            halves[h].0 += x.0.data.len;
            halves[h].1.push(x);
        }
        let work = |list: Vec<(&crate::model::PageRun, bool)>| -> Result<()> {
            for (run, writable) in list {
                let reader = match run.parent {
                    0 => self.pages,
                    d => self.parents.get(d as usize - 1).ok_or_else(|| {
                        Error::Restore(format!("memory at {:#x} is in parent image {d}, which is missing", run.addr))
                    })?,
                };
                let bytes = reader.get_unchecked_sum(&run.data)?;
                crate::sys::populate_read(bytes);
                if xxhash_rust::xxh3::xxh3_64(bytes) != run.data.xxh3 {
                    return Err(Error::Restore(format!("pages.img: checksum mismatch for memory at {:#x} (image corrupt)", run.addr)));
                }
                let r = if writable { crate::sys::vm_write(pid, run.addr, bytes) } else { mem.write_all_at(bytes, run.addr) };
                r.ctx(|| format!("fill memory at {:#x}", run.addr))?;
            }
            Ok(())
        };
        let [(na, a), (nb, b)] = halves;
        if na + nb < 4 << 20 {
            // Not worth two threads.
            return work(a).and(work(b));
        }
        std::thread::scope(|s| {
            let h = s.spawn(|| work(b));
            let ra = work(a);
            let rb = h.join().unwrap_or_else(|_| Err(Error::Restore("fill worker panicked".into())));
            ra.and(rb)
        })
    }

    fn map_vma(&self, r: &mut Remote, scratch: u64, v: &Vma, opened: &mut HashMap<(String, bool), u64>) -> std::io::Result<()> {
        let len = v.end - v.start;
        let fixed = libc::MAP_FIXED as u64;
        match &v.kind {
            VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vdso => Ok(()),
            VmaKind::Anon => {
                let flags = (v.flags | libc::MAP_ANONYMOUS) as u64 | fixed;
                r.call(libc::SYS_mmap, &[v.start, len, v.prot as u64, flags, u64::MAX, 0]).map(drop)
            }
            VmaKind::File { path } => {
                let shared = v.flags & libc::MAP_SHARED != 0;
                let rw = shared && v.prot & libc::PROT_WRITE != 0;
                let fd = match opened.get(&(path.clone(), rw)) {
                    Some(fd) => *fd,
                    None => {
                        let fd = open_in(r, scratch, path, if rw { libc::O_RDWR } else { libc::O_RDONLY })?;
                        opened.insert((path.clone(), rw), fd);
                        fd
                    }
                };
                r.call(libc::SYS_mmap, &[v.start, len, v.prot as u64, v.flags as u64 | fixed, fd, v.pgoff]).map(drop)
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
                    return r.call(libc::SYS_shmat, &[shmid as u64, v.start, fl]).map(drop);
                }
                let fd = self.shmem_fd[*id as usize] as u64;
                r.call(libc::SYS_mmap, &[v.start, len, v.prot as u64, libc::MAP_SHARED as u64 | fixed, fd, v.pgoff]).map(drop)
            }
        }
    }
}

fn move_block(r: &mut Remote, b: &Block, to: u64) -> std::io::Result<Block> {
    let delta = to.wrapping_sub(b.vvar.0);
    let mv = |r: &mut Remote, (s, e): (u64, u64)| -> std::io::Result<(u64, u64)> {
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        r.call(libc::SYS_mremap, &[s, e - s, e - s, flags, s.wrapping_add(delta)])?;
        Ok((s.wrapping_add(delta), e.wrapping_add(delta)))
    };
    let vvar = mv(r, b.vvar)?;
    let vclock = match b.vclock {
        Some(c) => Some(mv(r, c)?),
        None => None,
    };
    // The syscall instruction lives in [vdso]: after this mremap the next
    // injection must use the new address (the caller updates it).
    let old_ip = r.syscall_ip();
    let vdso = mv(r, b.vdso)?;
    r.set_syscall_ip(old_ip.wrapping_add(delta));
    Ok(Block { vvar, vclock, vdso })
}

/// `openat(AT_FDCWD, path, flags)` inside the task.
fn open_in(r: &mut Remote, scratch: u64, path: &str, flags: i32) -> std::io::Result<u64> {
    let mut b = path.as_bytes().to_vec();
    if b.len() >= 4096 || b.contains(&0) {
        return Err(std::io::Error::other(format!("bad path {path:?}")));
    }
    b.push(0);
    r.write_mem(scratch + 4096, &b)?;
    r.call(libc::SYS_openat, &[libc::AT_FDCWD as u64, scratch + 4096, (flags | libc::O_CLOEXEC) as u64, 0])
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {path}: {e}")))
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

fn thread_state(r: &mut Remote, scratch: u64, th: &ThreadImage) -> std::io::Result<()> {
    if th.robust_list != 0 {
        r.call(libc::SYS_set_robust_list, &[th.robust_list, th.robust_list_len])?;
    }
    r.call(libc::SYS_set_tid_address, &[th.clear_child_tid])?;
    let ss = &th.sigaltstack;
    if ss.flags & libc::SS_DISABLE == 0 && ss.size != 0 {
        let b: Vec<u8> = [ss.sp, (ss.flags & !libc::SS_ONSTACK) as u64, ss.size].iter().flat_map(|w| w.to_le_bytes()).collect();
        r.write_mem(scratch + 16384, &b)?;
        r.call(libc::SYS_sigaltstack, &[scratch + 16384, 0])?;
    }
    if let Some(rs) = th.rseq {
        r.call(libc::SYS_rseq, &[rs.ptr, rs.len as u64, 0, rs.sig as u64])?;
    }
    if !th.comm.is_empty() {
        let mut b = th.comm.as_bytes()[..th.comm.len().min(15)].to_vec();
        b.push(0);
        r.write_mem(scratch + 16384 + 64, &b)?;
        r.call(libc::SYS_prctl, &[libc::PR_SET_NAME as u64, scratch + 16384 + 64])?;
    }
    Ok(())
}

/// Installs `filters` (oldest first) in the thread of `r`.
fn install_seccomp(r: &mut Remote, scratch: u64, filters: &[Vec<u8>]) -> std::io::Result<()> {
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    for f in filters {
        if f.len() % 8 != 0 || f.len() / 8 > 4096 || f.len() + 32 > (SCRATCH_LEN - 32768) as usize {
            return Err(std::io::Error::other("bad seccomp filter"));
        }
        // struct sock_fprog { u16 len; (pad); struct sock_filter *filter }
        let prog_at = scratch + 32768;
        let insns_at = prog_at + 16;
        let mut hdr = vec![0u8; 16];
        hdr[..2].copy_from_slice(&((f.len() / 8) as u16).to_le_bytes());
        hdr[8..].copy_from_slice(&insns_at.to_le_bytes());
        r.write_mem(prog_at, &hdr)?;
        r.write_mem(insns_at, f)?;
        r.call(libc::SYS_seccomp, &[SECCOMP_SET_MODE_FILTER, 0, prog_at])?;
    }
    Ok(())
}

/// Credentials last, per thread: bounding set, groups and ids with
/// capabilities kept across the uid change, then the capability sets.
fn restore_creds(r: &mut Remote, scratch: u64, c: &Creds, nnp: bool) -> std::io::Result<()> {
    let full = (1u64 << 41) - 1;
    let root = c.uids == [0; 4] && c.gids == [0; 4];
    let all_caps = c.cap_eff & full == full && c.cap_prm & full == full && c.cap_bnd & full == full;
    if !(root && all_caps && c.cap_amb == 0 && c.cap_inh == 0 && c.groups.is_empty()) {
        for cap in 0..64u64 {
            if c.cap_bnd & (1 << cap) == 0 {
                let _ = r.call(libc::SYS_prctl, &[libc::PR_CAPBSET_DROP as u64, cap]);
            }
        }
        r.call(libc::SYS_prctl, &[libc::PR_SET_SECUREBITS as u64, (c.securebits | 0x10) as u64])?;
        let g: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        r.write_mem(scratch + 20480, &g)?;
        r.call(libc::SYS_setgroups, &[c.groups.len() as u64, scratch + 20480])?;
        r.call(libc::SYS_setresgid, &[c.gids[0] as u64, c.gids[1] as u64, c.gids[2] as u64])?;
        r.call(libc::SYS_setfsgid, &[c.gids[3] as u64])?;
        r.call(libc::SYS_setresuid, &[c.uids[0] as u64, c.uids[1] as u64, c.uids[2] as u64])?;
        r.call(libc::SYS_setfsuid, &[c.uids[3] as u64])?;
        // struct __user_cap_header_struct { u32 version = 3, int pid = 0 }, then 2 x { eff, prm, inh }.
        let lo = |x: u64| (x & 0xffff_ffff) as u32;
        let hi = |x: u64| (x >> 32) as u32;
        let words: [u32; 8] = [0x2008_0522, 0, lo(c.cap_eff), lo(c.cap_prm), lo(c.cap_inh), hi(c.cap_eff), hi(c.cap_prm), hi(c.cap_inh)];
        let b: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        r.write_mem(scratch + 24576, &b)?;
        r.call(libc::SYS_capset, &[scratch + 24576, scratch + 24576 + 8])?;
        r.call(libc::SYS_prctl, &[libc::PR_SET_SECUREBITS as u64, c.securebits as u64])
            .or_else(|e| if c.securebits & 0x10 == 0 { r.call(libc::SYS_prctl, &[libc::PR_SET_KEEPCAPS as u64, 0]) } else { Err(e) })?;
        for cap in 0..64u64 {
            if c.cap_amb & (1 << cap) != 0 {
                r.call(libc::SYS_prctl, &[libc::PR_CAP_AMBIENT as u64, libc::PR_CAP_AMBIENT_RAISE as u64, cap, 0, 0])?;
            }
        }
    }
    if nnp {
        r.call(libc::SYS_prctl, &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0])?;
    }
    Ok(())
}
