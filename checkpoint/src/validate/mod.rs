//! Validation of a decoded image before restore acts on any of it.
//!
//! The image may be hostile (it travels through registries and tarballs).
//! [`validate`] checks every count, id, range and reference the restore
//! relies on, so that later code can index and allocate without fear.
//! Errors are `ImageError::Invalid` with a message naming the task (or
//! file, or shmem object) and the offending item.

use std::collections::{HashMap, HashSet};

use crate::image::{check_blob, ImageError, Inventory, PAGE_SIZE};
use crate::model::{
    FileKind, MmImage, PageRun, ShmemKind, TaskImage, TaskState, ThreadImage, TreeImage, Vma,
    VmaKind,
};

pub const MAX_TASKS: usize = 32768;
pub const MAX_THREADS: usize = 4096;
pub const MAX_VMAS: usize = 65536;
pub const MAX_FDS: usize = 1 << 20;
pub const MAX_FILES: usize = 1 << 20;
pub const MAX_SHMEM: usize = 1 << 20;
/// File locks of one task (the kernel has no limit; a process with more
/// is unusual, and each is one injected call at restore).
pub const MAX_LOCKS: usize = 1 << 16;
/// SysV semaphore sets, and message queues, of one IPC namespace
/// (the kernel's IPCMNI).
pub const MAX_IPC: usize = 32768;
/// Messages of one queue (the kernel's bound is the queue's byte limit).
pub const MAX_MESSAGES: usize = 1 << 20;
/// Bytes queued on one TCP connection, each way (`net.core.rmem_max` and
/// `wmem_max` are far lower by default).
pub const MAX_TCP_QUEUE: u64 = 1 << 30;
/// POSIX timers of one process (each is three injected calls at restore).
pub const MAX_POSIX_TIMERS: usize = 1 << 16;
pub const PID_MAX: i32 = 4_194_304;
/// Highest user-space address on x86-64 (4-level paging); the vsyscall
/// page above it is never dumped.
pub const USER_END: u64 = 0x0000_7fff_ffff_f000;
/// Lowest address a mapping may start at: the kernel's default
/// `vm.mmap_min_addr` (mapping page zero helps exploit kernel NULL
/// dereferences; a restore running as root could do it).
pub const USER_START: u64 = 0x1_0000;
pub const NSIG: usize = 64;
pub const SIGINFO_SIZE: usize = 128;
pub const MAX_PENDING: usize = 1 << 16;
pub const NREGS: usize = 27;
pub const XSAVE_MIN: usize = 576;
pub const XSAVE_MAX: usize = 16384;
pub const RLIM_NLIMITS: u32 = 16;
pub const MAX_PIPE_CAPACITY: u32 = 1 << 20;
/// Bytes queued on one end of a Unix socket pair (the kernel's limit is
/// the sender's buffer, at most `net.core.wmem_max`-sized).
pub const MAX_UNIX_QUEUE: u64 = 64 << 20;
pub const PATH_MAX: usize = 4096;
const MAX_COMM: usize = 64;
const MAX_GROUPS: usize = 65536;
const MAX_AUXV: usize = 256;
const MAX_MADVISE: usize = 16;
/// Madvise hints a VMA may carry: MADV_DONTFORK(10) ..= MADV_KEEPONFORK(19),
/// all harmless state flags.
const MADVISE_OK: std::ops::RangeInclusive<i32> = 10..=19;

macro_rules! bail {
    ($($arg:tt)*) => { return Err(ImageError::Invalid(format!($($arg)*))) };
}

mod kinds;
use kinds::{check_epolls, check_event_file, check_ipc, check_posix_timers, check_socket, check_tcp};

fn check_path(what: &str, p: &str) -> Result<(), ImageError> {
    if !p.starts_with('/') {
        bail!("{what}: path {p:?} is not absolute");
    }
    if p.len() > PATH_MAX {
        bail!("{what}: path of {} bytes is too long", p.len());
    }
    if p.contains('\0') {
        bail!("{what}: path {p:?} contains NUL");
    }
    if p.split('/').any(|c| c == "..") {
        bail!("{what}: path {p:?} has a '..' component");
    }
    Ok(())
}

fn check_name(what: &str, s: &str, max: usize) -> Result<(), ImageError> {
    if s.len() > max || s.contains('\0') {
        bail!("{what}: bad name {:?}", s.get(..max.min(64)).unwrap_or("?"));
    }
    Ok(())
}

fn check_id(what: &str, id: i32) -> Result<(), ImageError> {
    if !(1..=PID_MAX).contains(&id) {
        bail!("{what} {id} out of range 1..={PID_MAX}");
    }
    Ok(())
}

/// Longest chain of parent images (`--parent-path`) a restore follows.
pub const MAX_PARENT_DEPTH: u32 = 16;

fn check_blob_in(who: &str, blob: &crate::model::Blob, pages_len: u64) -> Result<(), ImageError> {
    check_blob(blob, pages_len).map_err(|e| ImageError::Invalid(format!("{who}: {e}")))
}

fn check_siginfos(who: &str, v: &[Vec<u8>]) -> Result<(), ImageError> {
    if v.len() > MAX_PENDING {
        bail!("{who}: {} pending signals (limit {MAX_PENDING})", v.len());
    }
    if let Some(s) = v.iter().find(|s| s.len() != SIGINFO_SIZE) {
        bail!(
            "{who}: pending siginfo of {} bytes, expected {SIGINFO_SIZE}",
            s.len()
        );
    }
    Ok(())
}

/// Checks page runs: aligned, non-empty, sorted, non-overlapping, within
/// `[lo, hi)`, data of exactly npages pages, blob within pages.img.
fn check_runs(
    who: &str,
    runs: &[PageRun],
    lo: u64,
    hi: u64,
    pages_len: u64,
) -> Result<(), ImageError> {
    let mut prev_end = lo;
    for r in runs {
        let bytes = r.npages.checked_mul(PAGE_SIZE);
        let end = bytes.and_then(|b| r.addr.checked_add(b));
        let (Some(bytes), Some(end)) = (bytes, end) else {
            bail!(
                "{who}: page run at {:#x} of {} pages overflows",
                r.addr,
                r.npages
            );
        };
        if r.addr % PAGE_SIZE != 0 || r.npages == 0 {
            bail!(
                "{who}: page run at {:#x} of {} pages is unaligned or empty",
                r.addr,
                r.npages
            );
        }
        if r.addr < lo || end > hi {
            bail!(
                "{who}: page run {:#x}-{end:#x} outside {lo:#x}-{hi:#x}",
                r.addr
            );
        }
        if r.addr < prev_end {
            bail!("{who}: page run {:#x}-{end:#x} overlaps or is out of order (previous ends at {prev_end:#x})", r.addr);
        }
        if r.data.len != bytes {
            bail!(
                "{who}: page run at {:#x}: data of {} bytes for {} pages",
                r.addr,
                r.data.len,
                r.npages
            );
        }
        if r.parent > MAX_PARENT_DEPTH {
            bail!("{who}: page run at {:#x} in parent image {} (at most {MAX_PARENT_DEPTH})", r.addr, r.parent);
        }
        // Data in a parent image is bounds- and checksum-checked against
        // that image's pages.img when it is read.
        if r.parent == 0 {
            check_blob_in(&format!("{who}: page run at {:#x}", r.addr), &r.data, pages_len)?;
        }
        prev_end = end;
    }
    Ok(())
}

/// Validates a decoded tree against a pages.img of data length `pages_len`.
pub fn validate(tree: &TreeImage, pages_len: u64) -> Result<(), ImageError> {
    let t = tree;
    if t.tasks.is_empty() || t.tasks.len() > MAX_TASKS {
        bail!("{} tasks (must be 1..={MAX_TASKS})", t.tasks.len());
    }
    if t.files.len() > MAX_FILES {
        bail!("{} files (limit {MAX_FILES})", t.files.len());
    }
    if t.shmem.len() > MAX_SHMEM {
        bail!("{} shmem objects (limit {MAX_SHMEM})", t.shmem.len());
    }
    if t.host.page_size != PAGE_SIZE {
        bail!(
            "host page size {} (only {PAGE_SIZE} is supported)",
            t.host.page_size
        );
    }
    check_name("host", &t.host.kernel, 256)?;
    check_id("root pid", t.root)?;
    // The root is listed first; every other task's parent is listed before it
    // (so there is exactly one root and no cycle).
    if let Some(first) = t.tasks.first().filter(|f| f.pid != t.root) {
        bail!("first task {} is not the root {}", first.pid, t.root);
    }

    // Shared memory objects, by id. Restore indexes its tables by id, so
    // the ids are the positions: 0, 1, 2, ...
    let mut shmem = HashMap::new();
    for (i, s) in t.shmem.iter().enumerate() {
        let who = format!("shmem {}", s.id);
        if s.id as usize != i {
            bail!("{who}: id out of order (listed at {i})");
        }
        shmem.insert(s.id, s);
        if s.size > USER_END {
            bail!("{who}: size {} too large", s.size);
        }
        let hi = s.size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        check_runs(&who, &s.pages, 0, hi, pages_len)?;
        if s.pages.iter().any(|r| r.parent != 0) {
            bail!("{who}: shared memory data must be in the image itself");
        }
        if let ShmemKind::Memfd { name, seals } = &s.kind {
            check_name(&who, name, 249)?;
            if seals & !0x3f != 0 {
                bail!("{who}: unknown seals {seals:#x}");
            }
        }
        if let ShmemKind::SysV { shmid, mode, .. } = s.kind {
            // shm_next_id takes the id; shmget the permission bits (no flags).
            if shmid < 0 || mode & !0o777 != 0 || s.size == 0 {
                bail!("{who}: SysV segment id {shmid}, mode {mode:#o} or size {} invalid", s.size);
            }
        }
    }

    check_ipc(t)?;

    // Files, by id.
    let mut files = HashMap::new();
    let mut pipes: HashMap<u64, (u32, bool)> = HashMap::new(); // capacity, data seen
    let mut unix_ends: HashMap<u64, ([u8; 2], i32)> = HashMap::new(); // ends seen, type
    for (i, f) in t.files.iter().enumerate() {
        let who = format!("file {}", f.id);
        // As for shmem: restore indexes by id.
        if f.id as usize != i {
            bail!("{who}: id out of order (listed at {i})");
        }
        files.insert(f.id, f);
        // The kernel drops O_CREAT, O_EXCL and O_TRUNC from an open file's
        // flags: an image carrying them is forged.
        let never = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;
        if f.flags & libc::O_ACCMODE == 3 || f.flags & never != 0 || f.pos < 0 {
            bail!("{who}: bad flags {:#o} or position {}", f.flags, f.pos);
        }
        let mut pipe = |id: u64,
                        cap: u32,
                        data: &Option<crate::model::Blob>|
         -> Result<(), ImageError> {
            if !cap.is_power_of_two() || u64::from(cap) < PAGE_SIZE || cap > MAX_PIPE_CAPACITY {
                bail!("{who}: pipe capacity {cap} is not a power of two in {PAGE_SIZE}..={MAX_PIPE_CAPACITY}");
            }
            if let Some(d) = data {
                if d.len > u64::from(cap) {
                    bail!("{who}: {} queued bytes exceed pipe capacity {cap}", d.len);
                }
                check_blob_in(&who, d, pages_len)?;
            }
            let e = pipes.entry(id).or_insert((cap, false));
            if e.0 != cap {
                bail!(
                    "{who}: pipe:[{id}] capacity {cap} differs from its other end's {}",
                    e.0
                );
            }
            if data.is_some() && std::mem::replace(&mut e.1, true) {
                bail!("{who}: pipe:[{id}] contents stored twice");
            }
            Ok(())
        };
        match &f.kind {
            FileKind::Regular { path, size, mode } => {
                check_path(&who, path)?;
                if *size > i64::MAX as u64 || mode & !0o177777 != 0 {
                    bail!("{who}: bad size {size} or mode {mode:#o}");
                }
            }
            FileKind::Unlinked { path, mode, data } => {
                check_path(&who, path)?;
                check_blob_in(&who, data, pages_len)?;
                if mode & !0o177777 != 0 {
                    bail!("{who}: bad mode {mode:#o}");
                }
                // Restore creates this file (briefly) from the image's bytes.
                if mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
                    bail!("{who}: deleted file with set-id mode {mode:#o} (refused)");
                }
            }
            FileKind::Directory { path } | FileKind::CharDevice { path, .. } => {
                check_path(&who, path)?
            }
            FileKind::Pipe {
                pipe: id,
                capacity,
                data,
            } => pipe(*id, *capacity, data)?,
            FileKind::Fifo {
                path,
                pipe: id,
                capacity,
                data,
            } => {
                check_path(&who, path)?;
                pipe(*id, *capacity, data)?;
            }
            FileKind::Inherited { key } => {
                if key.is_empty() {
                    bail!("{who}: inherited file without a key");
                }
                check_name(&who, key, PATH_MAX)?;
            }
            FileKind::Memfd { shmem: id } => match shmem.get(id).map(|s| &s.kind) {
                Some(ShmemKind::Memfd { .. }) => {}
                Some(_) => bail!("{who}: memfd refers to shmem {id}, which is not a memfd"),
                None => bail!("{who}: memfd refers to missing shmem {id}"),
            },
            FileKind::InetSocket { .. } => check_socket(&who, &f.kind)?,
            FileKind::TcpConnection { state, .. } => {
                check_tcp(&who, &f.kind)?;
                for b in [&state.send, &state.recv].into_iter().flatten() {
                    check_blob_in(&who, b, pages_len)?;
                }
            }
            FileKind::UnixPair { ty, pair, end, shutdown, data, name } => {
                if let Some(n) = name {
                    if *ty == libc::SOCK_DGRAM || n.is_empty() || n.len() >= 108 {
                        bail!("{who}: unix socket of type {ty} named with {} bytes", n.len());
                    }
                    if n[0] != 0 {
                        let path = std::str::from_utf8(n).map_err(|_| ImageError::Invalid(format!("{who}: socket path is not UTF-8")))?;
                        check_path(&who, path)?;
                    }
                }
                if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(ty) || *end > 1 || shutdown & !3 != 0 {
                    bail!("{who}: unix socket type {ty}, end {end} or shutdown {shutdown} invalid");
                }
                if let Some(d) = data {
                    if *ty != libc::SOCK_STREAM || d.len > MAX_UNIX_QUEUE {
                        bail!("{who}: {} queued bytes on a unix socket of type {ty}", d.len);
                    }
                    check_blob_in(&who, d, pages_len)?;
                }
                let e = unix_ends.entry(*pair).or_insert(([0u8; 2], *ty));
                e.0[*end as usize] += 1;
                if e.1 != *ty {
                    bail!("{who}: unix socket pair {pair} has ends of two types");
                }
            }
            FileKind::UnixListener { ty, name, backlog, file } => {
                let abstract_name = name.first() == Some(&0);
                if ![libc::SOCK_STREAM, libc::SOCK_SEQPACKET].contains(ty) || name.is_empty() || name.len() >= 108 || !(0..=65535).contains(backlog) {
                    bail!("{who}: unix listener of type {ty}, name of {} bytes or backlog {backlog} invalid", name.len());
                }
                match (abstract_name, file) {
                    (true, None) => {}
                    (false, Some(f)) if f.mode & !0o7777 == 0 => {
                        let path = std::str::from_utf8(name).map_err(|_| ImageError::Invalid(format!("{who}: socket path is not UTF-8")))?;
                        check_path(&who, path)?;
                    }
                    _ => bail!("{who}: unix listener's file mode does not match its name"),
                }
            }
            k => check_event_file(&who, k)?,
        }
    }

    if let Some((pair, _)) = unix_ends.iter().find(|(_, e)| e.0 != [1, 1]) {
        bail!("unix socket pair {pair} does not have exactly one of each end");
    }

    // The tree: unique pids and tids, one root, parents first.
    let mut index: HashMap<i32, usize> = HashMap::new();
    let mut tids: HashSet<i32> = HashSet::new();
    for (i, task) in t.tasks.iter().enumerate() {
        let pid = task.pid;
        check_id("pid", pid)?;
        let who = format!("task {pid}");
        if index.insert(pid, i).is_some() || !tids.insert(pid) {
            bail!("{who}: duplicate pid");
        }
        // 0: the group or session leader lives outside the dumped pid
        // namespace; the restored task inherits the restorer's.
        if task.pgid != 0 {
            check_id(&format!("{who}: pgid"), task.pgid)?;
        }
        if task.sid != 0 {
            check_id(&format!("{who}: sid"), task.sid)?;
        }
        if i != 0 {
            match index.get(&task.ppid) {
                Some(&p) if p < i => {}
                Some(_) => bail!("{who}: is its own parent"),
                None if t.tasks.iter().any(|o| o.pid == task.ppid) => {
                    bail!("{who}: listed before its parent {}", task.ppid)
                }
                None => bail!("{who}: parent {} is not in the image", task.ppid),
            }
        }
        for th in task.threads.iter().skip(1) {
            check_id(&format!("{who}: tid"), th.tid)?;
            if !tids.insert(th.tid) {
                bail!("{who}: duplicate tid {}", th.tid);
            }
        }
        check_task(task, &who, &files, &shmem, pages_len)?;
    }
    check_epolls(t, &index)?;
    for f in &t.files {
        let Some(o) = f.owner else { continue };
        let holds = index.get(&o.pid).is_some_and(|&i| t.tasks[i].fds.iter().any(|d| d.file == f.id));
        if !holds || !(0..=NSIG as i32).contains(&o.signal) {
            bail!("file {}: owner {} (signal {}) is not a task holding it", f.id, o.pid, o.signal);
        }
    }
    if let Some(root) = t.tasks.first().filter(|r| index.contains_key(&r.ppid)) {
        bail!("task {}: the root's parent {} is a task of the image (a cycle)", root.pid, root.ppid);
    }
    // Groups and sessions led from inside the tree name a task of it (the
    // dump writes 0 for those led from outside).
    for task in &t.tasks {
        for (what, id) in [("process group", task.pgid), ("session", task.sid)] {
            if id != 0 && !index.contains_key(&id) {
                bail!("task {}: {what} {id} is led by no task of the image", task.pid);
            }
        }
    }
    Ok(())
}

/// Job-control stop signals: the only ones a process can be stopped by.
const STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
/// A raw wait status a zombie can have: exited with a code, or killed by a
/// signal whose default action ends the process (optionally dumping core).
fn valid_exit_status(status: i32) -> bool {
    let sig = status & 0x7f;
    if sig == 0 {
        return status & !0xff00 == 0;
    }
    let harmless = [libc::SIGCHLD, libc::SIGCONT, libc::SIGURG, libc::SIGWINCH];
    status & !0xff == 0 && sig <= NSIG as i32 && !STOP_SIGNALS.contains(&sig) && !harmless.contains(&sig)
}

fn check_task(
    task: &TaskImage,
    who: &str,
    files: &HashMap<u32, &crate::model::FileImage>,
    shmem: &HashMap<u32, &crate::model::ShmemImage>,
    pages_len: u64,
) -> Result<(), ImageError> {
    check_name(who, &task.comm, MAX_COMM)?;
    match task.state {
        TaskState::Zombie { status } => {
            if !valid_exit_status(status) {
                bail!("{who}: zombie with impossible exit status {status:#x}");
            }
            if !task.threads.is_empty() || task.mm.is_some() || !task.fds.is_empty() || !task.posix_timers.is_empty() {
                bail!("{who}: zombie with threads, memory, fds or timers");
            }
            if task.sigactions.len() != NSIG && !task.sigactions.is_empty() {
                bail!(
                    "{who}: {} sigactions (expected {NSIG} or 0)",
                    task.sigactions.len()
                );
            }
        }
        TaskState::Running | TaskState::Stopped { .. } => {
            if let TaskState::Stopped { signal } = task.state {
                if !STOP_SIGNALS.contains(&signal) {
                    bail!("{who}: stopped by bad signal {signal}");
                }
            }
            if task.threads.is_empty() || task.threads.len() > MAX_THREADS {
                bail!(
                    "{who}: {} threads (must be 1..={MAX_THREADS})",
                    task.threads.len()
                );
            }
            if task.threads.first().map(|t| t.tid) != Some(task.pid) {
                bail!("{who}: first thread is not the group leader");
            }
            if task.sigactions.len() != NSIG {
                bail!(
                    "{who}: {} sigactions (expected {NSIG})",
                    task.sigactions.len()
                );
            }
            for th in &task.threads {
                check_thread(&format!("{who}: thread {}", th.tid), th)?;
            }
            let Some(mm) = &task.mm else {
                bail!("{who}: live task without memory")
            };
            check_mm(who, mm, shmem, pages_len)?;
        }
    }
    check_siginfos(who, &task.shared_pending)?;
    if task.fds.len() > MAX_FDS {
        bail!("{who}: {} fds (limit {MAX_FDS})", task.fds.len());
    }
    let mut seen = HashSet::new();
    let mut locks = 0;
    for fd in &task.fds {
        if !(0..MAX_FDS as i32).contains(&fd.fd) || !seen.insert(fd.fd) {
            bail!("{who}: fd {} out of range or duplicate", fd.fd);
        }
        let Some(f) = files.get(&fd.file) else {
            bail!("{who}: fd {} refers to missing file {}", fd.fd, fd.file);
        };
        locks += fd.locks.len();
        if locks > MAX_LOCKS {
            bail!("{who}: over {MAX_LOCKS} file locks");
        }
        if let Some(l) = fd.locks.iter().find(|l| !crate::locks::valid(l) || !crate::locks::lockable(&f.kind)) {
            bail!("{who}: fd {}: {} lock {l:?} invalid or on a file that cannot be locked", fd.fd, crate::locks::describe(l));
        }
    }
    check_posix_timers(who, task)?;
    let c = &task.creds;
    if c.groups.len() > MAX_GROUPS {
        bail!("{who}: {} supplementary groups", c.groups.len());
    }
    if !matches!(task.state, TaskState::Zombie { .. }) {
        check_path(&format!("{who}: cwd"), &task.fs.cwd)?;
        check_path(&format!("{who}: root"), &task.fs.root)?;
    }
    if task.fs.umask > 0o777 {
        bail!("{who}: umask {:#o}", task.fs.umask);
    }
    if task.rlimits.len() > RLIM_NLIMITS as usize {
        bail!("{who}: {} rlimits", task.rlimits.len());
    }
    let mut seen = 0u32;
    for r in &task.rlimits {
        if r.resource >= RLIM_NLIMITS || seen & (1 << r.resource) != 0 || r.cur > r.max {
            bail!(
                "{who}: rlimit {} ({}/{}) invalid or duplicate",
                r.resource,
                r.cur,
                r.max
            );
        }
        seen |= 1 << r.resource;
    }
    if !(0..=NSIG as i32).contains(&task.pdeath_signal) || !(0..=2).contains(&task.dumpable) {
        bail!(
            "{who}: bad pdeath signal {} or dumpable {}",
            task.pdeath_signal,
            task.dumpable
        );
    }
    if !(-1000..=1000).contains(&task.oom_score_adj) {
        bail!("{who}: oom_score_adj {} out of range", task.oom_score_adj);
    }
    if ![0, 1, 3].contains(&task.thp_disable) {
        bail!("{who}: THP disable mode {} unknown", task.thp_disable);
    }
    let barriers = crate::task::MEMBARRIER_CMDS.iter().fold(0, |m, c| m | c);
    if task.membarrier & !barriers != 0 {
        bail!("{who}: membarrier registrations {:#x} unknown", task.membarrier);
    }
    Ok(())
}

fn check_thread(who: &str, th: &ThreadImage) -> Result<(), ImageError> {
    if !crate::sched::valid(&th.sched) {
        bail!("{who}: scheduling {:?} invalid", th.sched);
    }
    if let Some(cpus) = &th.affinity {
        if cpus.is_empty() || cpus.windows(2).any(|w| w[0] >= w[1]) || cpus.iter().any(|&c| c >= crate::sched::MAX_CPUS) {
            bail!("{who}: CPU affinity {:?} empty, unsorted or beyond CPU {}", cpus.get(..8.min(cpus.len())), crate::sched::MAX_CPUS - 1);
        }
    }
    if th.seccomp.len() > 64 || th.seccomp.iter().any(|f| f.is_empty() || f.len() % 8 != 0 || f.len() > 4096 * 8) {
        bail!("{who}: bad seccomp filters");
    }
    if th.regs.len() != NREGS {
        bail!("{who}: {} registers (expected {NREGS})", th.regs.len());
    }
    if !(XSAVE_MIN..=XSAVE_MAX).contains(&th.xsave.len()) {
        bail!(
            "{who}: xsave area of {} bytes (must be {XSAVE_MIN}..={XSAVE_MAX})",
            th.xsave.len()
        );
    }
    check_siginfos(who, &th.pending)?;
    if let Some(r) = th.rseq {
        if r.len < 32 || r.ptr % 32 != 0 {
            bail!(
                "{who}: rseq area {:#x} of {} bytes is unaligned or too short",
                r.ptr,
                r.len
            );
        }
    }
    check_name(who, &th.comm, MAX_COMM)
}

fn check_mm(
    who: &str,
    mm: &MmImage,
    shmem: &HashMap<u32, &crate::model::ShmemImage>,
    pages_len: u64,
) -> Result<(), ImageError> {
    if mm.vmas.len() > MAX_VMAS {
        bail!("{who}: {} vmas (limit {MAX_VMAS})", mm.vmas.len());
    }
    let mut special = [0u32; 3];
    let mut prev: Option<&Vma> = None;
    for v in &mm.vmas {
        let vw = format!("{who}: vma {:#x}-{:#x}", v.start, v.end);
        if v.start % PAGE_SIZE != 0
            || v.end % PAGE_SIZE != 0
            || v.start >= v.end
            || v.pgoff % PAGE_SIZE != 0
        {
            bail!("{vw}: unaligned or empty (pgoff {:#x})", v.pgoff);
        }
        if v.start < USER_START {
            bail!("{vw}: below {USER_START:#x} (vm.mmap_min_addr)");
        }
        if v.end > USER_END {
            bail!("{vw}: beyond user space ({USER_END:#x})");
        }
        if let Some(p) = prev {
            if v.start < p.end {
                bail!(
                    "{who}: vma {:#x}-{:#x} overlaps {:#x}-{:#x}",
                    p.start,
                    p.end,
                    v.start,
                    v.end
                );
            }
        }
        prev = Some(v);
        if v.prot & !(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) != 0 {
            bail!("{vw}: bad prot {:#x}", v.prot);
        }
        let share = v.flags & (libc::MAP_SHARED | libc::MAP_PRIVATE);
        let known =
            libc::MAP_SHARED | libc::MAP_PRIVATE | libc::MAP_GROWSDOWN | libc::MAP_NORESERVE;
        if (share != libc::MAP_SHARED && share != libc::MAP_PRIVATE) || v.flags & !known != 0 {
            bail!("{vw}: bad flags {:#x}", v.flags);
        }
        if v.madvise.len() > MAX_MADVISE || v.madvise.iter().any(|m| !MADVISE_OK.contains(m)) {
            bail!(
                "{vw}: bad madvise hints {:?}",
                v.madvise.get(..MAX_MADVISE.min(v.madvise.len()))
            );
        }
        if v.mlock > crate::model::MLOCK_ON_FAULT {
            bail!("{vw}: bad mlock mode {}", v.mlock);
        }
        match &v.kind {
            VmaKind::Anon => {}
            VmaKind::File { path } => check_path(&vw, path)?,
            VmaKind::Shmem { id } => {
                if !shmem.contains_key(id) {
                    bail!("{vw}: refers to missing shmem {id}");
                }
            }
            k @ (VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vdso) => {
                let i = match k {
                    VmaKind::Vvar => 0,
                    VmaKind::VvarVclock => 1,
                    _ => 2,
                };
                special[i] += 1;
                if special[i] > 1 {
                    bail!("{vw}: second {k:?} mapping");
                }
                if !v.pages.is_empty() {
                    bail!("{vw}: {k:?} mapping with dumped pages");
                }
            }
        }
        if share == libc::MAP_SHARED && !v.pages.is_empty() {
            bail!("{vw}: private pages on a shared mapping");
        }
        check_runs(&vw, &v.pages, v.start, v.end, pages_len)?;
    }
    let fields = [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
    ];
    if fields.iter().any(|&a| a > USER_END)
        || mm.start_code > mm.end_code
        || mm.start_data > mm.end_data
        || mm.start_brk > mm.brk
        || mm.arg_start > mm.arg_end
        || mm.env_start > mm.env_end
    {
        bail!("{who}: inconsistent mm layout (code/data/brk/args/env)");
    }
    if mm.auxv.len() > MAX_AUXV || !mm.auxv.len().is_multiple_of(2) {
        bail!("{who}: auxv of {} words", mm.auxv.len());
    }
    if !mm.exe.is_empty() {
        check_path(&format!("{who}: exe"), &mm.exe)?;
    }
    Ok(())
}

/// Cross-checks an inventory against the tree (and its payload checksum)
/// and the pages file's data length.
pub fn check_inventory(
    inv: &Inventory,
    tree: &TreeImage,
    tree_xxh3: u64,
    pages_len: u64,
) -> Result<(), ImageError> {
    let m = |s: String| Err(ImageError::InventoryMismatch(s));
    if inv.tree_xxh3 != tree_xxh3 {
        return m("tree.img checksum differs (files from different dumps?)".into());
    }
    if inv.root_pid != tree.root || inv.tasks as usize != tree.tasks.len() {
        return m(format!(
            "root {} / {} tasks, tree has root {} / {} tasks",
            inv.root_pid,
            inv.tasks,
            tree.root,
            tree.tasks.len()
        ));
    }
    if inv.pages_len != pages_len {
        return m(format!(
            "pages length {}, pages.img has {pages_len}",
            inv.pages_len
        ));
    }
    if let Some(p) = &inv.parent {
        if p.is_empty() || p.starts_with('/') || p.contains('\0') || p.len() > PATH_MAX {
            return m(format!("parent {p:?} must be a relative path"));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod kinds_tests;
#[cfg(test)]
mod tests;
