//! Restore: an image directory in, a running process tree out, with every
//! pid, tid, pgid and sid as dumped, inside a fresh pid namespace.
//!
//! Stages, in order:
//!
//! 1. **load**: read and validate the image (nothing is acted on before);
//! 2. **plan**: staging fd numbers for files and shared memory, children
//!    lists, replacements for inherited stdio;
//! 3. **fork**: `clone3(CLONE_NEWPID)` the root stub (pid 1, or a helper
//!    init when the tree root is not pid 1); the stubs build the tree with
//!    `clone3(set_tid)` and report ready (`stub.rs`); SysV segments are made
//!    meanwhile inside the new IPC namespace;
//! 4. **seize**: find the stubs' host pids and stop them under ptrace;
//! 5. **morph**: rebuild each stub into its dumped process (`morph.rs`, `fill.rs`);
//! 6. **release**: re-stop stopped tasks, detach everyone at once.
//!
//! A failure at any stage kills the new pid namespace (every stub with it);
//! the image is only read, so a retry starts from scratch.

mod fill;
mod morph;
mod stub;

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{fault_point, Context, Error, Result};
use crate::image::{self, PagesReader};
use crate::model::{FileKind, ShmemKind, TaskState, TreeImage};
use crate::proc;
use crate::sys::{self, ptrace};

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub image_dir: PathBuf,
    /// Replacement fds for inherited files, by key (`pipe:[ino]`).
    pub inherit: HashMap<String, i32>,
    /// Inherited files with no key in `inherit` take the restorer's fd with
    /// the number the root task used for them (0, 1, 2), as runc does.
    pub inherit_stdio: bool,
    /// How long stubs may take to build the tree.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Restored {
    /// Host pid of the restored tree root.
    pub root_pid: i32,
    /// Host pid of the new namespace's init (the root itself when it is pid 1).
    pub init_pid: i32,
    pub restore_us: u64,
    pub pages_restored: u64,
    /// Of those, pages filled in bulk with `UFFDIO_COPY`.
    pub uffd_pages: u64,
    /// Named stages with their end time since the start of the restore (us).
    pub phases: Vec<(&'static str, u64)>,
}

/// Restores the image in `opts.image_dir`.
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    with_stages(opts, None, |stages, tree, pages| stages.run(tree, pages, opts))
}

/// Loads and validates the image, runs `f`, and on any failure kills the
/// new namespace (`init`, once known) so nothing half-made survives.
fn with_stages(
    opts: &RestoreOptions,
    init: Option<i32>,
    f: impl FnOnce(&mut Stages, &TreeImage, &PagesReader) -> Result<Restored>,
) -> Result<Restored> {
    let t0 = Instant::now();
    let (inv, tree, pages) = image::open_image(&opts.image_dir)?;
    let parents = image::open_parents(&opts.image_dir, &inv)?;
    let mut stages = Stages { init, pid_of: HashMap::new(), parents, t0, phases: Vec::new() };
    match f(&mut stages, &tree, &pages) {
        Ok(mut r) => {
            r.restore_us = t0.elapsed().as_micros() as u64;
            r.phases = std::mem::take(&mut stages.phases);
            Ok(r)
        }
        Err(e) => {
            stages.abort();
            Err(e)
        }
    }
}

struct Stages {
    init: Option<i32>,
    pid_of: HashMap<i32, i32>,
    /// pages.img of the parent images (`--parent-path` chains), parent first.
    parents: Vec<PagesReader>,
    t0: Instant,
    phases: Vec<(&'static str, u64)>,
}

impl Stages {
    fn mark(&mut self, stage: &'static str) {
        self.phases.push((stage, self.t0.elapsed().as_micros() as u64));
    }

    fn abort(&mut self) {
        if let Some(init) = self.init.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(init), None);
        }
    }

    /// Tree mode: clone the root stub into a new pid namespace ourselves.
    fn run(&mut self, tree: &TreeImage, pages: &PagesReader, opts: &RestoreOptions) -> Result<Restored> {
        let plan = make_plan(tree, pages, resolve_inherit(tree, opts)?)?;
        // Control pipes at fixed numbers above everything the image uses.
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "create control pipe".into())?;
        let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "create control pipe".into())?;
        let staged = [
            place(ready_w.as_raw_fd(), plan.ready_fd())?,
            place(hold_r.as_raw_fd(), plan.hold_fd())?,
            place(pages.fd().as_raw_fd(), plan.base + 2)?,
        ];
        drop(ready_w);
        drop(hold_r);
        let mut flags = libc::CLONE_NEWPID as u64;
        if has_sysv(tree) {
            flags |= libc::CLONE_NEWIPC as u64;
        }
        let init = sys::clone3_fork(flags, 0).ctx(|| "create the new pid namespace".into())?;
        if init == 0 {
            if tree.tasks[0].pid == 1 {
                stub::root_main(&plan);
            }
            stub::helper_init_main(&plan);
        }
        self.init = Some(init);
        for fd in staged {
            // Our copies of the staged control fds; the stubs keep theirs.
            let _ = nix::unistd::close(fd);
        }
        fault_point("after-namespaces")?;
        self.attach(tree, pages, &plan, init, ready_r, hold_w, opts)
    }

    /// From a running root stub on: SysV objects, wait for the tree, seize,
    /// morph, release.
    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        tree: &TreeImage,
        pages: &PagesReader,
        plan: &stub::Plan,
        init: i32,
        ready_r: OwnedFd,
        hold_w: OwnedFd,
        opts: &RestoreOptions,
    ) -> Result<Restored> {
        self.mark("load");
        if has_sysv(tree) {
            make_sysv(init, tree, pages)?;
        }
        if !tree.sem_sets.is_empty() || !tree.msg_queues.is_empty() {
            crate::ipc::restore(init, &tree.sem_sets, &tree.msg_queues)?;
        }
        self.wait_ready(ready_r, tree.tasks.len(), init, opts.timeout.unwrap_or(Duration::from_secs(60)))?;
        fault_point("mid-tree")?;
        self.mark("fork");

        // --- seize, morph, release: on several tracer threads (ptrace
        // belongs to the thread that seized), all-or-nothing: nobody is
        // released until every worker has morphed its tasks.
        self.find_tasks(init, tree)?;
        let live: Vec<usize> = (0..tree.tasks.len()).filter(|&i| !matches!(tree.tasks[i].state, TaskState::Zombie { .. })).collect();
        let workers = live.len().clamp(1, tracer_threads());
        let mut lists: Vec<Vec<usize>> = vec![Vec::new(); workers];
        for (k, i) in live.into_iter().enumerate() {
            lists[k % workers].push(i);
        }
        let m = morph::Morph {
            tree,
            pages,
            parents: &self.parents,
            shmem_fd: &plan.shmem_fd,
            base: plan.base,
            uffd_pages: Default::default(),
        };
        let barrier = std::sync::Barrier::new(workers);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let pid_of = &self.pid_of;
        let results: Vec<Result<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = lists
                .into_iter()
                .map(|list| {
                    let (m, barrier, failed) = (&m, &barrier, &failed);
                    s.spawn(move || {
                        let mut threads: Vec<(usize, Vec<i32>)> = Vec::new();
                        let r = seize_and_morph(m, tree, pid_of, &list, &mut threads);
                        if r.is_err() {
                            failed.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        barrier.wait();
                        let pages = r?;
                        if failed.load(std::sync::atomic::Ordering::SeqCst) {
                            return Err(Error::Restore("another restore worker failed".into()));
                        }
                        fault_point("before-resume")?;
                        release(tree, &threads)?;
                        Ok(pages)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Restore("restore worker panicked".into())))).collect()
        });
        drop(hold_w);
        let mut restored_pages = 0;
        // Report the first real error (not "another worker failed").
        let mut errs: Vec<Error> = Vec::new();
        for r in results {
            match r {
                Ok(p) => restored_pages += p,
                Err(e) => errs.push(e),
            }
        }
        if !errs.is_empty() {
            let i = errs.iter().position(|e| !e.to_string().contains("another restore worker")).unwrap_or(0);
            return Err(errs.swap_remove(i));
        }
        let uffd_pages = m.uffd_pages.into_inner();
        self.mark("morph");
        let root_pid = self.pid_of[&tree.root];
        self.init = None;
        Ok(Restored {
            root_pid,
            init_pid: init,
            restore_us: 0,
            pages_restored: restored_pages,
            uffd_pages,
            phases: Vec::new(),
        })
    }

    fn wait_ready(&mut self, ready: OwnedFd, n: usize, init: i32, timeout: Duration) -> Result<()> {
        let mut f = std::fs::File::from(ready);
        let deadline = Instant::now() + timeout;
        let mut got = 0;
        let mut buf = Vec::new();
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Restore(format!("timed out: {got} of {n} tasks created")));
            }
            let mut pfd = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&f), nix::poll::PollFlags::POLLIN)];
            let ms = left.as_millis().min(1000) as u16;
            let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms));
            if proc::Stat::read(&format!("/proc/{init}/stat")).map(|s| s.state == 'Z').unwrap_or(true) {
                // Init died: collect its last words below (the pipe may hold an error).
            }
            let mut chunk = [0u8; 4096];
            let k = match pfd[0].revents() {
                Some(r) if r.intersects(nix::poll::PollFlags::POLLIN | nix::poll::PollFlags::POLLHUP) => {
                    f.read(&mut chunk).ctx(|| "read control pipe".into())?
                }
                Some(r) if r.intersects(nix::poll::PollFlags::POLLERR | nix::poll::PollFlags::POLLNVAL) => {
                    return Err(Error::Restore("the control pipe of the restore stubs broke".into()));
                }
                _ => continue,
            };
            if k == 0 {
                return Err(Error::Restore(format!("tree creation stopped after {got} of {n} tasks")));
            }
            buf.extend_from_slice(&chunk[..k]);
            while let Some(&b) = buf.first() {
                if b == b'.' {
                    got += 1;
                    buf.remove(0);
                } else if b == b'E' {
                    match buf.iter().position(|&c| c == b'\n') {
                        Some(end) => {
                            return Err(Error::Restore(String::from_utf8_lossy(&buf[1..end]).into_owned()));
                        }
                        None => break,
                    }
                } else {
                    buf.remove(0);
                }
            }
        }
        Ok(())
    }

    /// Maps every dumped pid to the host pid of its stub.
    fn find_tasks(&mut self, init: i32, tree: &TreeImage) -> Result<()> {
        let mut queue = vec![init];
        while let Some(pid) = queue.pop() {
            let st = proc::Status::read(&format!("/proc/{pid}/status")).ctx(|| format!("read status of stub {pid}"))?;
            let vpid = *st.nspid.last().unwrap_or(&0);
            self.pid_of.insert(vpid, pid);
            queue.extend(proc::children(pid).ctx(|| format!("list children of stub {pid}"))?);
        }
        for t in &tree.tasks {
            if !self.pid_of.contains_key(&t.pid) {
                return Err(Error::Restore(format!("task {} was not created", t.pid)));
            }
        }
        Ok(())
    }
}

fn has_sysv(tree: &TreeImage) -> bool {
    tree.shmem.iter().any(|o| matches!(o.kind, ShmemKind::SysV { .. }))
}

/// Staging fd numbers and children lists (the same in the engine and in a
/// stub that computes them on its own inside a container).
fn make_plan<'a>(tree: &'a TreeImage, pages: &'a PagesReader, inherit: Vec<Option<i32>>) -> Result<stub::Plan<'a>> {
    let index: HashMap<i32, usize> = tree.tasks.iter().enumerate().map(|(i, t)| (t.pid, i)).collect();
    let mut children = vec![Vec::new(); tree.tasks.len()];
    for (i, t) in tree.tasks.iter().enumerate().skip(1) {
        let p = *index.get(&t.ppid).ok_or_else(|| Error::Restore(format!("task {}: parent {} missing", t.pid, t.ppid)))?;
        children[p].push(i);
    }
    let max_fd = tree.tasks.iter().flat_map(|t| t.fds.iter().map(|f| f.fd)).max().unwrap_or(2);
    let base = (max_fd + 1).max(16);
    let nfiles = tree.files.len() as i32;
    let file_fd: Vec<i32> = (0..nfiles).map(|i| base + 3 + i).collect();
    let shmem_fd: Vec<i32> = (0..tree.shmem.len() as i32).map(|i| base + 3 + nfiles + i).collect();
    raise_nofile(base as u64 + 3 + tree.files.len() as u64 + tree.shmem.len() as u64 + 16)?;
    Ok(stub::Plan { tree, children, root_index: 0, base, file_fd, shmem_fd, inherit, pages })
}

/// Entry of `stasis` exec'd as a container's init to restore into it: reads
/// the image from `image_dir`, builds the tree as pid 1, reports on
/// `ready_fd` and waits on `hold_fd` for the engine ([`restore_attached`]).
pub fn container_stub_main(image_dir: &std::path::Path, ready_fd: i32, hold_fd: i32) -> ! {
    let fail = |msg: String| -> ! {
        let line = format!("E{msg}\n");
        // SAFETY: writing to the control pipe, then leaving.
        unsafe {
            libc::write(ready_fd, line.as_ptr().cast(), line.len());
            libc::_exit(1)
        }
    };
    if std::process::id() != 1 {
        fail("the restore stub must run as pid 1 of a new pid namespace".into());
    }
    let (_inv, mut tree, pages) = match image::open_image(image_dir) {
        Ok(x) => x,
        Err(e) => fail(e.to_string()),
    };
    stub::slim(&mut tree);
    if tree.root != 1 {
        fail(format!("the image's root is pid {}, a container's init must be pid 1", tree.root));
    }
    let opts = RestoreOptions { inherit_stdio: true, ..Default::default() };
    let plan = match resolve_inherit(&tree, &opts).and_then(|inh| make_plan(&tree, &pages, inh)) {
        Ok(p) => p,
        Err(e) => fail(e.to_string()),
    };
    for (fd, at) in [(ready_fd, plan.ready_fd()), (hold_fd, plan.hold_fd()), (pages.fd().as_raw_fd(), plan.base + 2)] {
        if let Err(e) = place(fd, at) {
            fail(e.to_string());
        }
    }
    stub::root_main(&plan)
}

/// Engine side of a container restore: `init` is the host pid of the stub
/// started by [`container_stub_main`]; `ready`/`hold` the other ends of its
/// control pipes.
pub fn restore_attached(opts: &RestoreOptions, init: i32, ready: OwnedFd, hold: OwnedFd) -> Result<Restored> {
    with_stages(opts, Some(init), |stages, tree, pages| {
        let plan = make_plan(tree, pages, vec![None; tree.files.len()])?;
        stages.attach(tree, pages, &plan, init, ready, hold, opts)
    })
}

/// Tracer threads for the morph: two per CPU, at most eight. A tracer
/// sleeps while its stub runs each injected call, so with one per CPU the
/// CPUs idle through every round trip. tree800 on two CPUs, morph stage:
/// 0.45-0.55 s with two threads, 0.42 with three, 0.43 with four, 0.38
/// with six, 0.42-0.44 with eight (two or three runs each, alternating).
fn tracer_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2).clamp(2, 8)
}

/// Seizes the stubs of `list` (task indexes) and morphs them; returns the
/// number of pages restored and fills `threads` with their host tids.
fn seize_and_morph(
    m: &morph::Morph,
    tree: &TreeImage,
    pid_of: &HashMap<i32, i32>,
    list: &[usize],
    threads: &mut Vec<(usize, Vec<i32>)>,
) -> Result<u64> {
    for &i in list {
        let t = &tree.tasks[i];
        let pid = pid_of[&t.pid];
        ptrace::seize(pid, ptrace::PTRACE_O_EXITKILL | ptrace::PTRACE_O_SUSPEND_SECCOMP).ctx(|| format!("seize stub {}", t.pid))?;
        ptrace::interrupt(pid).ctx(|| format!("interrupt stub {}", t.pid))?;
    }
    for &i in list {
        let t = &tree.tasks[i];
        let pid = pid_of[&t.pid];
        loop {
            match ptrace::wait(pid).ctx(|| format!("wait for stub {}", t.pid))? {
                ptrace::Stop::Stopped { event: ptrace::PTRACE_EVENT_STOP, .. } => break,
                ptrace::Stop::Stopped { .. } => ptrace::cont(pid, 0).ctx(|| "resume stub".into())?,
                s => return Err(Error::Restore(format!("stub {} died: {s:?}", t.pid))),
            }
        }
    }
    let mut pages = 0;
    for (k, &i) in list.iter().enumerate() {
        if k == list.len() / 2 {
            fault_point("mid-memory")?;
        }
        let t = &tree.tasks[i];
        threads.push((i, m.morph(t, pid_of[&t.pid])?));
        pages += t.mm.as_ref().map(|mm| mm.vmas.iter().flat_map(|v| &v.pages).map(|r| r.npages).sum::<u64>()).unwrap_or(0);
    }
    Ok(pages)
}

/// Lets the morphed tasks run: stopped ones are re-stopped with their signal.
fn release(tree: &TreeImage, threads: &[(usize, Vec<i32>)]) -> Result<()> {
    for (i, tids) in threads {
        let t = &tree.tasks[*i];
        for (k, &tid) in tids.iter().enumerate() {
            let sig = match t.state {
                TaskState::Stopped { signal } if k == 0 => signal,
                _ => 0,
            };
            ptrace::detach(tid, sig).ctx(|| format!("release task {}", t.pid))?;
        }
    }
    Ok(())
}

/// Puts a copy of `fd` at number `at` (not close-on-exec); returns `at`.
/// `at` is above every fd the process uses.
fn place(fd: i32, at: i32) -> Result<i32> {
    crate::sys::dup_to(fd, at).ctx(|| format!("place control fd at {at}"))?;
    Ok(at)
}

fn raise_nofile(need: u64) -> Result<()> {
    let (cur, max) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ctx(|| "read fd limit".into())?;
    if cur >= need {
        return Ok(());
    }
    let max = max.max(need);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, need, max).ctx(|| "raise fd limit".into())
}

fn resolve_inherit(tree: &TreeImage, opts: &RestoreOptions) -> Result<Vec<Option<i32>>> {
    let root = &tree.tasks[0];
    let mut out = vec![None; tree.files.len()];
    for f in &tree.files {
        if let FileKind::Inherited { key } = &f.kind {
            let fd = match opts.inherit.get(key) {
                Some(fd) => Some(*fd),
                None if opts.inherit_stdio => root.fds.iter().find(|d| d.file == f.id && d.fd <= 2).map(|d| d.fd),
                None => None,
            };
            out[f.id as usize] = Some(fd.ok_or_else(|| {
                Error::Restore(format!("the image uses {key} from outside the tree and no replacement was given"))
            })?);
        }
    }
    Ok(out)
}

/// Creates the SysV segments with their ids inside the IPC namespace of `init`.
fn make_sysv(init: i32, tree: &TreeImage, pages: &PagesReader) -> Result<()> {
    let mut segs = Vec::new();
    for o in &tree.shmem {
        if let ShmemKind::SysV { key, shmid, mode, uid, gid } = o.kind {
            let mut data = Vec::new();
            for r in &o.pages {
                data.push((r.addr, pages.get(&r.data)?.to_vec()));
            }
            segs.push((key, shmid, mode, uid, gid, o.size, data));
        }
    }
    sys::in_ipc_ns(init, move || {
        for (key, shmid, mode, uid, gid, size, data) in segs {
            std::fs::write("/proc/sys/kernel/shm_next_id", shmid.to_string())?;
            let id = sys::shm_create(key, size as usize, mode)?;
            if id != shmid {
                return Err(std::io::Error::other(format!("SysV segment came back as id {id}, not {shmid}")));
            }
            sys::shm_fill(id, &data, uid, gid, mode)?;
        }
        // The kernel resets shm_next_id to -1 once an id is allocated.
        Ok(())
    })
    .ctx(|| "recreate SysV shared memory".into())
}
