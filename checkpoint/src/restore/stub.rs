//! The restore stub: code that runs in the freshly cloned processes of the
//! new tree, before the engine rebuilds their address spaces over ptrace.
//!
//! The root stub first opens every file of the image into a staging range
//! of fd numbers (above every fd the image uses), creates shared memory
//! objects and pipes with their queued bytes, so that every task inherits
//! them. Each stub then forks its children with `clone3(set_tid)` (children
//! that stay in the inherited session before `setsid`, the others after),
//! joins its process group, moves its fds into place, sets cwd, umask,
//! rlimits, signal handlers and prctl flags, reports ready on the control
//! pipe and blocks until the engine seizes it. Zombies exit with their
//! recorded status instead of blocking.
//!
//! Errors are reported as one line `E<message>` on the control pipe; the
//! stub then exits and the engine tears the whole namespace down.

use std::ffi::CString;

use crate::model::{FileKind, ShmemKind, TaskImage, TaskState, TreeImage};
use crate::sys;

/// Everything a stub needs, computed by the engine before the first clone.
pub struct Plan<'a> {
    pub tree: &'a TreeImage,
    /// Children of each task, by index into `tree.tasks`, in pid order.
    pub children: Vec<Vec<usize>>,
    pub root_index: usize,
    /// First staging fd; the control fds sit at `base`, `base+1`, `base+2`.
    pub base: i32,
    pub file_fd: Vec<i32>,
    pub shmem_fd: Vec<i32>,
    /// For `Inherited` files: the fd of the restoring process to use.
    pub inherit: Vec<Option<i32>>,
    /// Mapped `pages.img` (read-only), for pipe, file and shmem contents.
    pub pages: &'a crate::image::PagesReader,
}

impl Plan<'_> {
    pub fn ready_fd(&self) -> i32 {
        self.base
    }
    pub fn hold_fd(&self) -> i32 {
        self.base + 1
    }
    /// First fd number above the staging range, for temporaries that must
    /// not land on a staging slot filled later.
    pub fn top(&self) -> i32 {
        self.base + 3 + self.file_fd.len() as i32 + self.shmem_fd.len() as i32
    }
}

/// Leaves out of the tasks the large parts no stub reads: threads, memory
/// maps, queued signals and POSIX timers (the engine restores those from
/// its own copy of the image); the small fields are kept whether stubs
/// read them or not. Then gives the freed heap back to the kernel. Every
/// stub is forked from the root stub and inherits its memory: each fork
/// copies those page tables and each morph unmaps them again. The kept
/// parts are copied into fresh allocations before the original tasks go,
/// so that what is freed is whole pages rather than holes between kept
/// pieces. For tree800 the root stub's resident memory
/// went from 11 MiB to 3.8 MiB.
pub fn slim(tree: &mut TreeImage) {
    let tasks: Vec<TaskImage> = tree
        .tasks
        .iter()
        .map(|t| TaskImage {
            pid: t.pid,
            ppid: t.ppid,
            pgid: t.pgid,
            sid: t.sid,
            state: t.state,
            comm: t.comm.clone(),
            threads: Vec::new(),
            mm: None,
            fds: t.fds.clone(),
            sigactions: t.sigactions.clone(),
            shared_pending: Vec::new(),
            creds: t.creds.clone(),
            fs: t.fs.clone(),
            rlimits: t.rlimits.clone(),
            itimers: t.itimers,
            posix_timers: Vec::new(),
            personality: t.personality,
            pdeath_signal: t.pdeath_signal,
            child_subreaper: t.child_subreaper,
            dumpable: t.dumpable,
            thp_disable: t.thp_disable,
            membarrier: t.membarrier,
            no_new_privs: t.no_new_privs,
            oom_score_adj: t.oom_score_adj,
        })
        .collect();
    tree.tasks = tasks;
    sys::trim_heap();
}

/// Moves `fd` to the lowest free number at or above `min`.
fn lift(fd: i32, min: i32) -> R<i32> {
    // SAFETY: duplicating and closing fds of this process.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD, min) };
    if n < 0 {
        return Err(errno("move fd"));
    }
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    Ok(n)
}

type R<T> = std::result::Result<T, String>;

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cstr(s: &str) -> R<CString> {
    CString::new(s).map_err(|_| format!("path with NUL: {s:?}"))
}

fn report(fd: i32, msg: &[u8]) {
    // SAFETY: writing a byte buffer to a pipe fd.
    unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
}

/// Entry of the root stub (pid 1 of the new namespace, or the child of the
/// helper init when the tree root is not pid 1).
pub fn root_main(plan: &Plan) -> ! {
    if let Err(e) = open_shared(plan) {
        fail(plan, plan.root_index, &e);
    }
    task_main(plan, plan.root_index)
}

/// Entry of a helper init: creates the tree root with its own pid, then
/// reaps orphans until the root exits, and exits with its status.
pub fn helper_init_main(plan: &Plan) -> ! {
    let root = &plan.tree.tasks[plan.root_index];
    match sys::clone3_fork(0, root.pid) {
        Ok(0) => root_main(plan),
        Ok(child) => loop {
            let mut st = 0;
            // SAFETY: waiting for children with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, 0) };
            if r == child || (r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)) {
                // SAFETY: terminating the helper.
                unsafe { libc::_exit(if libc::WIFEXITED(st) { libc::WEXITSTATUS(st) } else { 128 + libc::WTERMSIG(st) }) };
            }
        },
        Err(e) => fail(plan, plan.root_index, &format!("create tree root {}: {e}", root.pid)),
    }
}

fn fail(plan: &Plan, idx: usize, msg: &str) -> ! {
    let line = format!("Etask {}: {msg}\n", plan.tree.tasks[idx].pid);
    report(plan.ready_fd(), line.as_bytes());
    // SAFETY: leaving the failed stub without running destructors or atexit handlers.
    unsafe { libc::_exit(1) }
}

fn task_main(plan: &Plan, idx: usize) -> ! {
    match setup_task(plan, idx) {
        Ok(()) => {}
        Err(e) => fail(plan, idx, &e),
    }
    let t = &plan.tree.tasks[idx];
    if let TaskState::Zombie { status } = t.state {
        report(plan.ready_fd(), b".");
        become_zombie(status);
    }
    report(plan.ready_fd(), b".");
    // Block until the engine seizes us; EOF means the engine died: give up.
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(plan.hold_fd(), b.as_mut_ptr().cast(), 1) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            // SAFETY: terminating the stub.
            unsafe { libc::_exit(1) };
        }
    }
}

fn become_zombie(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: default disposition, no core file, then the signal to ourselves.
        unsafe {
            let lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
    }
    // SAFETY: exiting with the recorded code.
    unsafe { libc::_exit(libc::WEXITSTATUS(status)) }
}

/// Creates child `k` and waits until it has joined its session and process
/// group, so a later sibling can join a group this child leads.
fn fork_child(plan: &Plan, k: usize) -> R<()> {
    let pid = plan.tree.tasks[k].pid;
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills a 2-int array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(errno("sync pipe"));
    }
    let (r, w) = (lift(p[0], plan.top())?, lift(p[1], plan.top())?);
    match sys::clone3_fork(0, pid) {
        Ok(0) => {
            // SAFETY: the child keeps only the write end.
            unsafe { libc::close(r) };
            GROUP_SYNC.with(|g| g.set(w));
            task_main(plan, k)
        }
        Ok(_) => {
            let mut b = [0u8; 1];
            // SAFETY: closing our write end, reading one byte into a local, closing.
            let n = unsafe {
                libc::close(w);
                let n = libc::read(r, b.as_mut_ptr().cast(), 1);
                libc::close(r);
                n
            };
            if n != 1 {
                return Err(format!("child {pid} failed before joining its process group"));
            }
            Ok(())
        }
        Err(e) => Err(format!("create child {pid}: {e}")),
    }
}

thread_local! {
    /// Write end of the pipe on which this stub tells its parent that its
    /// session and process group are set (-1 for the root).
    static GROUP_SYNC: std::cell::Cell<i32> = const { std::cell::Cell::new(-1) };
}

fn group_joined() {
    let w = GROUP_SYNC.with(|g| g.replace(-1));
    if w >= 0 {
        report(w, b"g");
        // SAFETY: closing the sync pipe's write end.
        unsafe { libc::close(w) };
    }
}

fn setup_task(plan: &Plan, idx: usize) -> R<()> {
    let t = &plan.tree.tasks[idx];
    let leader = t.sid == t.pid;
    let kids = &plan.children[idx];
    let early = |k: &usize| {
        let c = &plan.tree.tasks[*k];
        leader && c.sid != t.sid && c.sid != c.pid
    };
    for k in kids.iter().filter(|k| early(k)) {
        fork_child(plan, *k)?;
    }
    // A container's init already leads its session (the runtime called
    // setsid before exec'ing the stub), and setsid would fail with EPERM.
    // SAFETY: getsid and getpid take and return integers.
    let leads = unsafe { libc::getsid(0) == libc::getpid() };
    // SAFETY: setsid takes no arguments.
    if leader && !leads && unsafe { libc::setsid() } < 0 {
        return Err(errno("setsid"));
    }
    // SAFETY: getpgid takes and returns integers.
    if t.pgid != 0 && !leader && unsafe { libc::getpgid(0) } != t.pgid {
        let target = if t.pgid == t.pid { 0 } else { t.pgid };
        // SAFETY: setpgid takes integers.
        if unsafe { libc::setpgid(0, target) } < 0 {
            return Err(errno(&format!("join process group {}", t.pgid)));
        }
    }
    group_joined();
    for k in kids.iter().filter(|k| !early(k)) {
        fork_child(plan, *k)?;
    }
    if matches!(t.state, TaskState::Zombie { .. }) {
        return Ok(());
    }
    install_fds(plan, t)?;
    crate::events::register_watches(&plan.tree.files, t)?;
    set_owners(plan.tree, t)?;
    let cwd = cstr(&t.fs.cwd)?;
    // SAFETY: `cwd` is a NUL-terminated string that outlives the call.
    if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
        return Err(errno(&format!("chdir {}", t.fs.cwd)));
    }
    // SAFETY: umask takes an integer.
    unsafe { libc::umask(t.fs.umask) };
    for r in &t.rlimits {
        let lim = libc::rlimit64 { rlim_cur: r.cur, rlim_max: r.max };
        // SAFETY: `lim` is a local that outlives the call; no old limit is read back.
        if unsafe { libc::prlimit64(0, r.resource as _, &lim, std::ptr::null_mut()) } < 0 {
            return Err(errno(&format!("set rlimit {}", r.resource)));
        }
    }
    set_sigactions(t)?;
    // SAFETY: personality takes an integer.
    unsafe { libc::personality(t.personality as libc::c_ulong) };
    if idx != plan.root_index && t.pdeath_signal != 0 {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, t.pdeath_signal as libc::c_ulong, 0, 0, 0) };
    }
    if t.child_subreaper {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes a flag.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let _ = std::fs::write("/proc/self/oom_score_adj", t.oom_score_adj.to_string());
    Ok(())
}

/// Kernel `struct sigaction` as `rt_sigaction` takes it.
#[repr(C)]
struct KSigAction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

fn set_sigactions(t: &TaskImage) -> R<()> {
    for sig in 1..=64usize {
        if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
            continue;
        }
        let a = t.sigactions.get(sig - 1).copied().unwrap_or_default();
        let k = KSigAction { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask };
        // SAFETY: rt_sigaction reads one kernel sigaction from `k`.
        let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &k as *const KSigAction, 0usize, 8usize) };
        if r < 0 && sig < 32 {
            return Err(errno(&format!("set handler of signal {sig}")));
        }
    }
    Ok(())
}

fn install_fds(plan: &Plan, t: &TaskImage) -> R<()> {
    let mut keep = vec![false; plan.base as usize];
    for f in &t.fds {
        let src = plan.file_fd[f.file as usize];
        // SAFETY: dup2 between fds of this process.
        if unsafe { libc::dup2(src, f.fd) } < 0 {
            return Err(errno(&format!("install fd {}", f.fd)));
        }
        if f.cloexec {
            // SAFETY: setting a descriptor flag.
            unsafe { libc::fcntl(f.fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        keep[f.fd as usize] = true;
    }
    for (fd, k) in keep.iter().enumerate() {
        if !k {
            // SAFETY: closing an fd this process does not need.
            unsafe { libc::close(fd as i32) };
        }
    }
    Ok(())
}

/// O_ASYNC files: the kernel signals with the fd number O_ASYNC was set
/// through, so it is set here, on the task's own number, by the file's
/// owner (or, without one, the first task holding it), after naming this
/// task (whose pid is `t.pid` again) owner with the file's signal.
fn set_owners(tree: &TreeImage, t: &TaskImage) -> R<()> {
    let mut done = std::collections::HashSet::new();
    for d in &t.fds {
        let f = &tree.files[d.file as usize]; // ids are positions (validated)
        if f.flags & libc::O_ASYNC == 0 || !done.insert(f.id) {
            continue;
        }
        let setter = match f.owner {
            Some(o) => o.pid,
            None => tree.tasks.iter().find(|k| k.fds.iter().any(|x| x.file == f.id)).map_or(t.pid, |k| k.pid),
        };
        if setter != t.pid {
            continue;
        }
        if let Some(o) = f.owner {
            let own = sys::FOwnerEx { kind: if o.thread { sys::F_OWNER_TID } else { sys::F_OWNER_PID }, pid: t.pid };
            // SAFETY: F_SETOWN_EX reads one struct f_owner_ex; F_SETSIG takes an int.
            if unsafe { libc::fcntl(d.fd, sys::F_SETOWN_EX, &own as *const sys::FOwnerEx) } < 0 || unsafe { libc::fcntl(d.fd, sys::F_SETSIG, o.signal) } < 0 {
                return Err(errno(&format!("set the owner of fd {}", d.fd)));
            }
        }
        // SAFETY: setting status flags on our own fd.
        if unsafe { libc::fcntl(d.fd, libc::F_SETFL, f.flags) } < 0 {
            return Err(errno(&format!("set O_ASYNC on fd {}", d.fd)));
        }
    }
    Ok(())
}

/// Places fd `fd` at staging number `at` (closing `fd`).
fn stage(fd: i32, at: i32) -> R<()> {
    if fd == at {
        return Ok(());
    }
    // SAFETY: moving an fd within this process.
    if unsafe { libc::dup2(fd, at) } < 0 {
        return Err(errno("stage fd"));
    }
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    Ok(())
}

fn blob_bytes<'a>(plan: &'a Plan, b: &crate::model::Blob) -> R<&'a [u8]> {
    plan.pages.get(b).map_err(|e| e.to_string())
}

fn write_all(fd: i32, mut b: &[u8]) -> R<()> {
    while !b.is_empty() {
        // SAFETY: writing from a live slice.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return Err(errno("write data"));
        }
        b = &b[n as usize..];
    }
    Ok(())
}

fn fill_shmem(plan: &Plan, o: &crate::model::ShmemImage, fd: i32) -> R<()> {
    for r in &o.pages {
        let b = blob_bytes(plan, &r.data)?;
        let n = (b.len() as u64).min(o.size.saturating_sub(r.addr)) as usize;
        // SAFETY: pwrite from a live slice.
        if unsafe { libc::pwrite(fd, b.as_ptr().cast(), n, r.addr as libc::off_t) } != n as isize {
            return Err(errno("fill shared memory"));
        }
    }
    Ok(())
}

fn make_memfd(plan: &Plan, o: &crate::model::ShmemImage, name: &str, seals: i32) -> R<i32> {
    // F_SEAL_SEAL alone is what every memfd made without MFD_ALLOW_SEALING reports.
    let sealed = seals & !libc::F_SEAL_SEAL != 0;
    let cname = cstr(name)?;
    // SAFETY: creating a memfd with a valid name.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), if sealed { libc::MFD_ALLOW_SEALING } else { 0 }) };
    if fd < 0 {
        return Err(errno("memfd_create"));
    }
    // SAFETY: sizing our own memfd.
    if unsafe { libc::ftruncate(fd, o.size as libc::off_t) } < 0 {
        return Err(errno("size memfd"));
    }
    fill_shmem(plan, o, fd)?;
    if sealed {
        // SAFETY: applying seals to our memfd.
        unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) };
    }
    Ok(fd)
}

/// A shared anonymous region is a shmem file named "/dev/zero"; the only way
/// to get one is an anonymous shared mmap, whose file we then open through
/// `/proc/self/map_files` so every task can map the same object.
fn make_shared_anon(plan: &Plan, o: &crate::model::ShmemImage) -> R<i32> {
    let size = o.size.max(4096) as usize;
    // SAFETY: a fresh shared anonymous mapping owned by this stub.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(errno("map shared memory"));
    }
    let path = format!("/proc/self/map_files/{:x}-{:x}", p as usize, p as usize + size);
    let fd = open_path(&path, libc::O_RDWR);
    // SAFETY: unmapping our own mapping; the object lives on through `fd`.
    unsafe { libc::munmap(p, size) };
    let fd = fd?;
    fill_shmem(plan, o, fd)?;
    Ok(fd)
}

/// Opens every file and shared memory object of the image at its staging fd.
fn open_shared(plan: &Plan) -> R<()> {
    let tree = plan.tree;
    for o in &tree.shmem {
        let fd = match &o.kind {
            ShmemKind::Memfd { name, seals } => make_memfd(plan, o, name, *seals)?,
            ShmemKind::Anon => make_shared_anon(plan, o)?,
            ShmemKind::SysV { .. } => continue,
        };
        stage(fd, plan.shmem_fd[o.id as usize])?;
    }
    // Both ends of each pipe and of each Unix socket pair, by id.
    let mut pipes: std::collections::HashMap<u64, (i32, i32)> = Default::default();
    let mut pairs: std::collections::HashMap<u64, (i32, i32)> = Default::default();
    let mut keepers = Vec::new();
    // Unix pairs first: one connected through a named listener is made
    // with a listener of the moment bound to that name, before the tree's
    // own listener binds it. TCP connections last: in repair mode they bind
    // over the listeners that share their ports, which could not bind over
    // them.
    let tcp = |f: &&crate::model::FileImage| matches!(f.kind, FileKind::TcpConnection { .. });
    let pair = |f: &&crate::model::FileImage| matches!(f.kind, FileKind::UnixPair { .. });
    let others = tree.files.iter().filter(|f| !tcp(f) && !pair(f));
    for f in tree.files.iter().filter(pair).chain(others).chain(tree.files.iter().filter(tcp)) {
        let at = plan.file_fd[f.id as usize];
        let fd = match &f.kind {
            FileKind::UnixPair { .. } => open_unix_end(plan, f, &mut pairs)?,
            _ => open_one(plan, f, &mut pipes, &mut keepers)?,
        };
        stage(fd, at)?;
        if !matches!(f.kind, FileKind::Inherited { .. } | FileKind::Pipe { .. }) {
            // SAFETY: seeking our own fd.
            unsafe { libc::lseek(at, f.pos, libc::SEEK_SET) };
        }
        // O_ASYNC records the fd number it is set through: see set_owners.
        // SAFETY: setting status flags on our own fd.
        unsafe { libc::fcntl(at, libc::F_SETFL, f.flags & !libc::O_ASYNC) };
    }
    // Once both ends of every connection exist: out of repair mode (which
    // sends a window probe the peer must be there to take).
    for f in tree.files.iter().filter(tcp) {
        crate::tcp::finish(plan.file_fd[f.id as usize], &f.kind, |b| blob_bytes(plan, b))?;
    }
    // After every end has its queued bytes: ends whose sending side was shut.
    for f in &tree.files {
        if let FileKind::UnixPair { pair, end, shutdown, .. } = f.kind {
            let ends = pairs[&pair];
            let fd = if end == 0 { ends.0 } else { ends.1 };
            // SAFETY: shutting down our own socket.
            if shutdown & 2 != 0 && unsafe { libc::shutdown(fd, libc::SHUT_WR) } < 0 {
                return Err(errno("shut down a unix socket"));
            }
        }
    }
    for (_, (r, w)) in pipes.into_iter().chain(pairs) {
        for fd in [r, w] {
            if fd >= 0 {
                // SAFETY: closing pipe ends no task uses.
                unsafe { libc::close(fd) };
            }
        }
    }
    for fd in keepers {
        // SAFETY: closing FIFO keepers.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// One end of a Unix socket pair: the pair is made on its first end; the
/// bytes queued on this end go into the other, to wait here again.
fn open_unix_end(plan: &Plan, f: &crate::model::FileImage, pairs: &mut std::collections::HashMap<u64, (i32, i32)>) -> R<i32> {
    let FileKind::UnixPair { ty, pair, end, data, .. } = &f.kind else { return Err("not a unix socket pair".into()) };
    let ends = match pairs.get(pair) {
        Some(e) => *e,
        None => {
            let mut p = [0i32; 2];
            // The names of the two ends, if the pair was connected through one.
            let mut names: [Option<&[u8]>; 2] = [None, None];
            for g in &plan.tree.files {
                if let FileKind::UnixPair { pair: q, end: e, name: Some(n), .. } = &g.kind {
                    if q == pair {
                        names[usize::from(*e & 1)] = Some(n.as_slice());
                    }
                }
            }
            if names.iter().any(Option::is_some) {
                // The accepted end has the name of a listener; a client
                // bound to a name of its own has one nobody listens on.
                let listened = |n: &[u8]| plan.tree.files.iter().any(|g| matches!(&g.kind, FileKind::UnixListener { name, .. } if name == n));
                let server = match names {
                    [Some(_), None] => 0,
                    [None, Some(_)] => 1,
                    _ => usize::from(!names[0].is_some_and(listened) && names[1].is_some_and(listened)),
                };
                (p[0], p[1]) = crate::unix::connect_named(*ty, names, server)?;
            } else {
                // SAFETY: socketpair fills a 2-int array.
                if unsafe { libc::socketpair(libc::AF_UNIX, *ty, 0, p.as_mut_ptr()) } < 0 {
                    return Err(errno("socketpair"));
                }
            }
            let e = (lift(p[0], plan.top())?, lift(p[1], plan.top())?);
            pairs.insert(*pair, e);
            e
        }
    };
    let (mine, other) = if *end == 0 { ends } else { (ends.1, ends.0) };
    if let Some(d) = data {
        // The queue may be larger than a default send buffer (its sender
        // had raised it): widen the buffer while writing, then put it back.
        use crate::sys::net::{set_sockopt_int, sockopt_int};
        let bytes = blob_bytes(plan, d)?;
        let was = sockopt_int(other, libc::SOL_SOCKET, libc::SO_SNDBUF).map_err(|e| format!("read SO_SNDBUF: {e}"))?;
        let need = i32::try_from(bytes.len()).unwrap_or(i32::MAX).saturating_add(1 << 16);
        let force = |v: i32| set_sockopt_int(other, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).map_err(|e| format!("set SO_SNDBUFFORCE: {e}"));
        force(need.max(was / 2))?;
        write_all(other, bytes)?;
        // The kernel doubles what it is given; `was` is already doubled.
        force(was / 2)?;
    }
    // SAFETY: duplicating our socket.
    let fd = unsafe { libc::fcntl(mine, libc::F_DUPFD, plan.base) };
    if fd < 0 {
        return Err(errno("dup unix socket"));
    }
    Ok(fd)
}

fn open_path(path: &str, flags: i32) -> R<i32> {
    let c = cstr(path)?;
    // SAFETY: open with a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL), 0) };
    if fd < 0 {
        return Err(errno(&format!("open {path}")));
    }
    Ok(fd)
}

/// Opens `path` only if it is a file of type `fmt` (`S_IFREG`, ...): the
/// image names it, the host decides what it is. Looked up with `O_PATH`
/// first (opening a device or a FIFO has effects of its own), checked,
/// then reopened through `/proc/self/fd`.
fn open_typed(path: &str, flags: i32, fmt: libc::mode_t) -> R<i32> {
    let p = open_path(path, libc::O_PATH | libc::O_CLOEXEC)?;
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of our own fd into a valid buffer.
    let r = if unsafe { libc::fstat(p, &mut st) } < 0 {
        Err(errno(&format!("stat {path}")))
    } else if st.st_mode & libc::S_IFMT != fmt {
        Err(format!("open {path}: file type {:o}, the image expects {fmt:o}", st.st_mode & libc::S_IFMT))
    } else {
        open_path(&format!("/proc/self/fd/{p}"), flags)
    };
    // SAFETY: closing our O_PATH fd.
    unsafe { libc::close(p) };
    r
}

fn open_one(
    plan: &Plan,
    f: &crate::model::FileImage,
    pipes: &mut std::collections::HashMap<u64, (i32, i32)>,
    keepers: &mut Vec<i32>,
) -> R<i32> {
    let flags = f.flags | libc::O_NOCTTY;
    match &f.kind {
        FileKind::Regular { path, .. } => open_typed(path, flags, libc::S_IFREG),
        FileKind::CharDevice { path, .. } => open_typed(path, flags, libc::S_IFCHR),
        FileKind::Directory { path } => open_typed(path, flags | libc::O_DIRECTORY, libc::S_IFDIR),
        FileKind::Unlinked { path, mode, data } => {
            let dir = std::path::Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or("/".into());
            // The ghost takes the original name when it is free, so the fd
            // reads as "<path> (deleted)" again once it is unlinked.
            let mut ghost = path.clone();
            let mut c = cstr(&ghost)?;
            // SAFETY: creating the ghost file with a valid C string.
            let mut w = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, *mode) };
            if w < 0 {
                ghost = format!("{}/.stasis-ghost-{}-{}", dir.trim_end_matches('/'), std::process::id(), f.id);
                c = cstr(&ghost)?;
                // SAFETY: as above.
                w = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, *mode) };
            }
            if w < 0 {
                return Err(errno(&format!("create {ghost}")));
            }
            let r = write_all(w, blob_bytes(plan, data)?).and_then(|_| open_path(&ghost, flags));
            // SAFETY: closing and unlinking our ghost.
            unsafe {
                libc::close(w);
                libc::unlink(c.as_ptr());
            }
            r
        }
        FileKind::EventFd { .. } | FileKind::SignalFd { .. } | FileKind::TimerFd { .. } | FileKind::Epoll { .. } => crate::events::open(&f.kind),
        FileKind::InetSocket { .. } => crate::sockets::open(&f.kind),
        FileKind::TcpConnection { .. } => crate::tcp::open(&f.kind, |b| blob_bytes(plan, b)),
        FileKind::UnixPair { .. } => Err("unix socket pairs are opened apart".into()),
        FileKind::UnixListener { .. } => crate::unix::open_listener(&f.kind),
        FileKind::Memfd { shmem } => {
            let src = plan.shmem_fd[*shmem as usize];
            open_path(&format!("/proc/self/fd/{src}"), flags)
        }
        FileKind::Inherited { key } => {
            let src = plan.inherit[f.id as usize].ok_or_else(|| format!("no replacement given for inherited {key}"))?;
            // SAFETY: duplicating an fd inherited from the engine.
            let fd = unsafe { libc::fcntl(src, libc::F_DUPFD, plan.base) };
            if fd < 0 {
                return Err(errno(&format!("inherit {key}")));
            }
            Ok(fd)
        }
        FileKind::Pipe { pipe, capacity, data } => {
            let ends = match pipes.get(pipe) {
                Some(e) => *e,
                None => {
                    let mut p = [0i32; 2];
                    // SAFETY: pipe2 fills a 2-int array.
                    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) } < 0 {
                        return Err(errno("pipe"));
                    }
                    let (r, w) = (lift(p[0], plan.top())?, lift(p[1], plan.top())?);
                    // SAFETY: sizing our pipe.
                    unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, *capacity as i32) };
                    pipes.insert(*pipe, (r, w));
                    (r, w)
                }
            };
            if let Some(d) = data {
                write_all(ends.1, blob_bytes(plan, d)?)?;
            }
            // Each end's first description is the pipe's own fd; further ones are reopened.
            let want_read = f.flags & libc::O_ACCMODE == libc::O_RDONLY;
            let slot = if want_read { ends.0 } else { ends.1 };
            // SAFETY: duplicating our pipe end.
            let fd = unsafe { libc::fcntl(slot, libc::F_DUPFD, plan.base) };
            if fd < 0 {
                return Err(errno("dup pipe"));
            }
            Ok(fd)
        }
        FileKind::Fifo { path, data, .. } => {
            // Never write the queued bytes into anything but a FIFO.
            let keeper = lift(open_typed(path, libc::O_RDWR | libc::O_NONBLOCK, libc::S_IFIFO)?, plan.top())?;
            keepers.push(keeper);
            if let Some(d) = data {
                write_all(keeper, blob_bytes(plan, d)?)?;
            }
            open_typed(path, flags | libc::O_NONBLOCK, libc::S_IFIFO)
        }
    }
}
