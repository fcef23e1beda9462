//! Checkpoint: a live process tree in, an image directory out.
//!
//! The dump is a list of phases, in this order:
//!
//! 1. **seize** every thread of the tree (`seize`), so nothing changes
//!    while we look and nothing escapes by forking;
//! 2. **ids**: map host pids to the ids inside the tree's pid namespace;
//! 3. **tasks**: per process, registers and thread state, injected queries
//!    (signal handlers, itimers, brk, prctl flags), VMAs with the ranges of
//!    populated pages, and fds (`task`, `memory`, `files`, `shmem`);
//! 4. **shared objects**: pipe contents, epoll watches and socket pairs,
//!    O_ASYNC owners, SysV segments;
//! 5. **pages**: copy all page data into `pages.img` on several threads;
//! 6. **write** `tree.img`, then `inventory.img` last (the commit marker);
//! 7. **finish**: kill the tree, or release it untouched (`leave_running`).
//!
//! Any failure before phase 7 detaches from every thread (the tree runs on
//! exactly as before) and removes the partial image files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{fault_point, Context, Error, Result};
use crate::files::FileTable;
use crate::image::{self, Inventory, MetaKind, PagesWriter};
use crate::copier::Copier;
use crate::memory;
use crate::model::{HostInfo, MmImage, PreDumpImage, TaskImage, TaskState, TreeImage};
use crate::proc;
use crate::seize::{Seized, SeizedTask};
use crate::shmem::ShmemTable;
use crate::sys::inject::{find_syscall_insn, Remote};
use crate::sys::{self};
use crate::task;

#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    pub image_dir: PathBuf,
    /// Keep the tree running after the dump.
    pub leave_running: bool,
    /// The tree owns its IPC namespace (a container): every SysV segment in
    /// it is saved, attached or not.
    pub own_ipc_ns: bool,
    /// Copy threads for page data.
    pub copy_threads: usize,
    /// Freeze this cgroup while seizing (a container's); `None` for a bare tree.
    pub freezer: Option<crate::freezer::Freezer>,
    /// With `leave_running`: copy memory while the tree runs and freeze it
    /// only to copy what it wrote meanwhile.
    pub pre_copy: bool,
    /// Memory only, tree left running, write trackers left in place.
    pub pre_dump: bool,
    /// A pre-dump this dump builds on, relative to `image_dir`.
    pub parent: Option<String>,
    /// Run while the tree is frozen and seized, before anything is read
    /// (the runtime saves file systems that must match the memory image).
    pub frozen_hook: Option<FrozenHook>,
}

/// A callback for [`DumpOptions::frozen_hook`].
#[derive(Clone)]
pub struct FrozenHook(pub std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>);

impl std::fmt::Debug for FrozenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrozenHook")
    }
}

/// Figures of one dump, for `stats-dump` and logs.
#[derive(Debug, Default, Clone)]
pub struct DumpStats {
    pub tasks: usize,
    pub threads: usize,
    pub pages_bytes: u64,
    /// Time the tree was held still (seize to release/kill), microseconds.
    pub frozen_us: u64,
    pub memdump_us: u64,
    pub memwrite_us: u64,
    pub pages_scanned: u64,
    /// Named phases with their end time since the start of the frozen pass (us).
    pub phases: Vec<(&'static str, u64)>,
    /// Killed processes whose memory the engine freed alongside their exit.
    pub reaped: usize,
    /// The copy while the tree ran, before the frozen pass (leave-running).
    pub precopy: Option<crate::precopy::RoundTimes>,
}

/// Files a dump creates in the image directory.
const OUTPUTS: [&str; 3] = ["pages.img", "tree.img", "inventory.img"];

/// Checkpoints the tree rooted at host pid `root`.
pub fn dump(root: i32, opts: &DumpOptions) -> Result<DumpStats> {
    let w = PagesWriter::create(&opts.image_dir)?;
    let r = dump_with(root, opts, &w);
    if r.is_err() {
        remove_outputs(&opts.image_dir);
    }
    r
}

fn dump_with(root: i32, opts: &DumpOptions, w: &PagesWriter) -> Result<DumpStats> {
    // An incremental dump: the parent pre-dump's index and pages.
    let (parent, parents) = match &opts.parent {
        Some(rel) => {
            let dir = image::parent_dir(&opts.image_dir, rel)?;
            let pinv: Inventory = image::read_meta(&dir, MetaKind::Inventory)?;
            if !pinv.pre_dump {
                return Err(Error::Image(image::ImageError::Invalid(format!("{} is not a pre-dump", dir.display()))));
            }
            let pre: PreDumpImage = image::read_meta(&dir, MetaKind::PreDump)?;
            let mut readers = vec![image::PagesReader::open(&dir)?];
            readers.extend(image::open_parents(&dir, &pinv)?);
            (Some(pre), readers)
        }
        None => (None, Vec::new()),
    };
    if opts.pre_dump {
        return pre_dump(root, opts, w, parent.as_ref(), &parents);
    }
    // Leave-running: copy memory while the tree runs first (best effort:
    // without it the frozen pass simply copies everything).
    let mut pre = match &parent {
        Some(p) => Some(crate::precopy::PreCopy::adopt(root, p)?),
        None if opts.leave_running && opts.pre_copy => {
            crate::precopy::PreCopy::run(root, opts.freezer.clone(), w, opts.copy_threads).ok()
        }
        None => None,
    };
    if let Some(p) = &mut pre {
        p.snapshot_flags();
    }
    let t0 = Instant::now();
    let seized = Seized::collect(root, opts.freezer.clone())?;
    let seized_us = t0.elapsed().as_micros() as u64;
    fault_point("after-seize")?;
    if let Some(h) = &opts.frozen_hook {
        (h.0)().ctx(|| "save the container's file systems".into())?;
    }
    let (mut tree, mut copier, mut stats, repaired) = collect(&seized, opts, w, pre.as_ref(), t0)?;
    stats.phases.insert(0, ("seize", seized_us));
    stats.precopy = pre.as_ref().filter(|_| parent.is_none()).map(|p| p.times);
    if opts.leave_running {
        // Everything is copied: the tree may run while we write metadata.
        seized.release();
        stats.frozen_us = t0.elapsed().as_micros() as u64;
        stats.phases.push(("release", stats.frozen_us));
        finish(&mut tree, &mut copier, w, opts, &parents)?;
        stats.phases.push(("write", t0.elapsed().as_micros() as u64));
    } else {
        finish(&mut tree, &mut copier, w, opts, &parents)?;
        stats.phases.push(("write", t0.elapsed().as_micros() as u64));
        fault_point("before-kill")?;
        let large = large_processes(&seized, &tree);
        stats.reaped = seized.kill(&large);
        repaired.close_silently();
        stats.frozen_us = t0.elapsed().as_micros() as u64;
        stats.phases.push(("kill", stats.frozen_us));
    }
    drop(pre);
    Ok(stats)
}

/// `--pre-dump`: memory only, the tree keeps running, and every process
/// keeps a write tracker for the next dump (`--parent-path`).
fn pre_dump(root: i32, opts: &DumpOptions, w: &PagesWriter, parent: Option<&PreDumpImage>, parents: &[image::PagesReader]) -> Result<DumpStats> {
    let t0 = Instant::now();
    let (pre, img) = crate::precopy::PreCopy::pre_dump(root, opts.freezer.clone(), w, opts.copy_threads, parent, parents)?;
    let copied: u64 = img.tasks.iter().flat_map(|t| &t.runs).filter(|r| r.parent == 0).map(|r| r.data.len).sum();
    let pages_len = w.finish()?;
    fault_point("write-image")?;
    let sum = image::write_meta(&opts.image_dir, MetaKind::PreDump, &img)?;
    let mut inv = Inventory::new(&TreeImage { root: 1, ..Default::default() }, sum, pages_len, opts.parent.clone());
    inv.tasks = img.tasks.len() as u32;
    inv.pre_dump = true;
    image::write_meta(&opts.image_dir, MetaKind::Inventory, &inv)?;
    Ok(DumpStats {
        tasks: img.tasks.len(),
        pages_bytes: copied,
        pages_scanned: copied / 4096,
        memdump_us: t0.elapsed().as_micros() as u64,
        frozen_us: pre.times.frozen_us,
        precopy: Some(pre.times),
        ..Default::default()
    })
}

fn remove_outputs(dir: &Path) {
    for f in OUTPUTS {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

struct Ids {
    nsidx: usize,
    vpid: HashMap<i32, i32>,
}

impl Ids {
    fn new(seized: &Seized) -> Result<Ids> {
        let root = &seized.tasks[0];
        let nsidx = root.status.nspid.len() - 1;
        let mut vpid = HashMap::new();
        for t in &seized.tasks {
            if t.status.nspid.len() != nsidx + 1 {
                return Err(Error::Unsupported { pid: t.pid, what: "a process in a nested pid namespace".into() });
            }
            vpid.insert(t.pid, t.status.nspid[nsidx]);
        }
        Ok(Ids { nsidx, vpid })
    }

    fn ns(&self, v: &[i32]) -> i32 {
        v.get(self.nsidx).copied().unwrap_or(0)
    }
}

/// Everything read while the tree is held: metadata and all page data.
fn collect(
    seized: &Seized,
    opts: &DumpOptions,
    w: &PagesWriter,
    pre: Option<&crate::precopy::PreCopy>,
    t0: Instant,
) -> Result<(TreeImage, Copier, DumpStats, crate::tcp::Repaired)> {
    let ids = Ids::new(seized)?;
    let mut copier = Copier::default();
    let mut files = FileTable::default();
    files.repaired = crate::tcp::Repaired::new(!opts.leave_running);
    let mut shm = ShmemTable::default();
    let mut tasks = Vec::with_capacity(seized.tasks.len());
    let mut stats = DumpStats { tasks: seized.tasks.len(), ..Default::default() };
    let mut vdso_sum = None;
    for (i, st) in seized.tasks.iter().enumerate() {
        let ppid = if i == 0 { 0 } else { ids.vpid.get(&st.status.ppid).copied().unwrap_or(0) };
        let t = dump_task(st, ppid, &ids, &mut files, &mut shm, w, &mut copier, &mut vdso_sum, pre)?;
        stats.threads += t.threads.len();
        tasks.push(t);
        if i == seized.tasks.len() / 2 {
            fault_point("mid-dump")?;
        }
    }
    // Groups and sessions led from outside the tree are inherited on restore.
    let pids: std::collections::HashSet<i32> = tasks.iter().map(|t| t.pid).collect();
    for t in &mut tasks {
        if !pids.contains(&t.pgid) {
            t.pgid = 0;
        }
        if !pids.contains(&t.sid) {
            t.sid = 0;
        }
    }
    stats.phases.push(("tasks", t0.elapsed().as_micros() as u64));
    files.finish_pipes(w, &mut copier)?;
    files.finish_links()?;
    files.finish_owners(|host| ids.vpid.get(&host).copied())?;
    shm.dump_sysv(seized.tasks[0].pid, opts.own_ipc_ns, w, &mut copier)?;
    let (sem_sets, msg_queues) = if opts.own_ipc_ns { crate::ipc::dump(seized.tasks[0].pid)? } else { Default::default() };
    stats.phases.push(("shared", t0.elapsed().as_micros() as u64));
    fault_point("mid-memory")?;
    let t1 = Instant::now();
    stats.memdump_us = (t1 - t0).as_micros() as u64;
    let copied: u64 = copier.jobs.iter().map(|j| j.len).sum();
    let sums = copier.run(w, opts.copy_threads)?;
    stats.memwrite_us = t1.elapsed().as_micros() as u64;
    stats.phases.push(("copy", t0.elapsed().as_micros() as u64));
    stats.pages_bytes = copied;
    stats.pages_scanned = copied / 4096;
    for t in &mut tasks {
        if let Some(mm) = &mut t.mm {
            memory::fill_sums(&mut mm.vmas, &sums);
        }
    }
    files.fill_sums(&sums);
    shm.fill_sums(&sums);
    let tree = TreeImage {
        root: tasks[0].pid,
        tasks,
        files: files.files,
        shmem: shm.objects,
        sem_sets,
        msg_queues,
        vdso_xxh3: vdso_sum,
        host: host_info(),
    };
    Ok((tree, copier, stats, std::mem::take(&mut files.repaired)))
}

/// Completes and writes the image: checksums of reused pre-copied pieces,
/// validation, `tree.img`, then `inventory.img` last.
fn finish(tree: &mut TreeImage, copier: &mut Copier, w: &PagesWriter, opts: &DumpOptions, parents: &[image::PagesReader]) -> Result<()> {
    let sums = copier.rehash_sums(w, parents)?;
    if !sums.is_empty() {
        for t in &mut tree.tasks {
            if let Some(mm) = &mut t.mm {
                memory::fill_resums(&mut mm.vmas, &sums);
            }
        }
    }
    let pages_len = w.reserved_end().saturating_sub(image::PAGE_SIZE);
    w.file().set_len(w.reserved_end()).ctx(|| "size pages.img".into())?;
    crate::validate::validate(tree, pages_len)?;
    fault_point("write-image")?;
    let pages_len = w.finish()?;
    let tree_sum = image::write_meta(&opts.image_dir, MetaKind::Tree, &*tree)?;
    let inv = Inventory::new(tree, tree_sum, pages_len, opts.parent.clone());
    image::write_meta(&opts.image_dir, MetaKind::Inventory, &inv)?;
    Ok(())
}

/// Processes with this much dumped memory get help freeing it when killed.
const LARGE_PROCESS: u64 = 64 << 20;

/// Host pids of the dumped processes with at least [`LARGE_PROCESS`] bytes
/// of private pages (`tree.tasks` follows `seized.tasks`).
fn large_processes(seized: &Seized, tree: &TreeImage) -> Vec<i32> {
    seized
        .tasks
        .iter()
        .zip(&tree.tasks)
        .filter(|(_, t)| {
            let bytes: u64 = t.mm.iter().flat_map(|mm| &mm.vmas).flat_map(|v| &v.pages).map(|r| r.data.len).sum();
            bytes >= LARGE_PROCESS
        })
        .map(|(s, _)| s.pid)
        .collect()
}

fn host_info() -> HostInfo {
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    HostInfo { kernel, xcr0: 0, page_size: 4096 }
}

#[allow(clippy::too_many_arguments)]
fn dump_task(
    st: &SeizedTask,
    ppid: i32,
    ids: &Ids,
    files: &mut FileTable,
    shm: &mut ShmemTable,
    w: &PagesWriter,
    copier: &mut Copier,
    vdso_sum: &mut Option<u64>,
    pre: Option<&crate::precopy::PreCopy>,
) -> Result<TaskImage> {
    let pid = st.pid;
    let s = &st.status;
    let vpid = ids.ns(&s.nspid);
    let mut t = TaskImage {
        pid: vpid,
        ppid,
        pgid: ids.ns(&s.nspgid),
        sid: ids.ns(&s.nssid),
        state: TaskState::Running,
        comm: s.name.clone(),
        threads: Vec::new(),
        mm: None,
        fds: Vec::new(),
        sigactions: Vec::new(),
        shared_pending: Vec::new(),
        creds: task::creds_of(s, 0),
        fs: Default::default(),
        rlimits: Vec::new(),
        itimers: Default::default(),
        posix_timers: Vec::new(),
        personality: 0,
        pdeath_signal: 0,
        child_subreaper: false,
        dumpable: 1,
        thp_disable: 0,
        membarrier: 0,
        no_new_privs: s.no_new_privs,
        oom_score_adj: 0,
    };
    if st.zombie {
        let stat = proc::Stat::read(&format!("/proc/{pid}/stat")).ctx(|| format!("read stat of zombie {vpid}"))?;
        t.state = TaskState::Zombie { status: stat.exit_code };
        return Ok(t);
    }
    if st.stopped {
        t.state = TaskState::Stopped { signal: libc::SIGSTOP };
    }
    let stat = proc::Stat::read(&format!("/proc/{pid}/stat")).ctx(|| format!("read stat of {vpid}"))?;
    let (maps, scans) = match pre {
        Some(p) => p.maps(pid).map(|m| (m, None)),
        None => memory::maps_and_scans(pid),
    }
    .ctx(|| format!("read mappings of {vpid}"))?;
    let vdso = maps
        .iter()
        .find(|m| m.path == "[vdso]")
        .ok_or_else(|| Error::Unsupported { pid: vpid, what: "a process without a vdso".into() })?;
    let mut text = vec![0u8; (vdso.end - vdso.start) as usize];
    sys::vm_read(pid, vdso.start, &mut text).ctx(|| format!("read vdso of {vpid}"))?;
    *vdso_sum = Some(crate::checksum::of(&text));
    let ip = find_syscall_insn(vdso.start, &text)
        .ok_or_else(|| Error::Unsupported { pid: vpid, what: "a vdso without a syscall instruction".into() })?;
    for &tid in &st.tids {
        let ts = proc::Status::read(&format!("/proc/{pid}/task/{tid}/status")).ctx(|| format!("read status of thread {tid}"))?;
        let mut th = task::dump_thread_regs(pid, tid, ids.ns(&ts.nspid))?;
        match ts.seccomp {
            0 => {}
            2 => th.seccomp = sys::ptrace::get_seccomp_filters(tid).ctx(|| format!("read seccomp filters of thread {tid}"))?,
            _ => return Err(Error::Unsupported { pid: vpid, what: format!("strict seccomp mode on thread {}", th.tid) }),
        }
        th.sched = crate::sched::dump(tid)?;
        th.affinity = crate::sched::dump_affinity(pid, tid)?;
        t.threads.push(th);
    }
    t.shared_pending = sys::ptrace::peek_siginfo(pid, true).ctx(|| format!("read shared pending signals of {vpid}"))?;
    let mut rs = Vec::with_capacity(st.tids.len());
    for &tid in &st.tids {
        rs.push(Remote::new(pid, tid, ip).ctx(|| format!("start injection in thread {tid}"))?);
    }
    let inj = task::dump_injected(&mut rs, s, &mut t.threads)?;
    if let Some(fd) = pre.and_then(|p| p.in_task_fd(pid)) {
        // The pre-dump's tracker is ours, not the application's: it leaves
        // the process here (tracking goes on through our copy).
        rs[0].call(libc::SYS_close, &[fd as u64]).ctx(|| format!("close the write tracker of {vpid}"))?;
    }
    for r in rs {
        r.finish().ctx(|| format!("restore registers of {vpid}"))?;
    }
    t.sigactions = inj.sigactions;
    t.itimers = inj.itimers;
    t.posix_timers = inj.posix_timers;
    t.pdeath_signal = inj.pdeath_signal;
    t.child_subreaper = inj.child_subreaper;
    t.dumpable = inj.dumpable;
    t.thp_disable = inj.thp_disable;
    t.membarrier = inj.membarrier;
    t.creds = task::creds_of(s, inj.securebits);
    t.rlimits = task::rlimits(pid)?;
    t.fs = task::fs_info(pid, s.umask)?;
    let personality = std::fs::read_to_string(format!("/proc/{pid}/personality")).unwrap_or_default();
    t.personality = u64::from_str_radix(personality.trim(), 16).unwrap_or(0);
    t.oom_score_adj = task::read_num(&format!("/proc/{pid}/oom_score_adj")) as i32;
    let root_prefix = "/";
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ctx(|| format!("read exe of {vpid}"))?;
    let vmas = memory::dump_vmas(pid, vpid, &maps, root_prefix, shm, w, copier, pre, scans.as_ref())?;
    t.mm = Some(MmImage {
        vmas,
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_brk: stat.start_brk,
        brk: inj.brk,
        start_stack: stat.start_stack,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
        auxv: proc::auxv(pid).ctx(|| format!("read auxv of {vpid}"))?,
        exe: crate::files::strip_root(root_prefix, &exe.to_string_lossy(), vpid)?,
    });
    t.fds = files.dump_task(pid, vpid, root_prefix, shm, w, copier)?;
    Ok(t)
}
