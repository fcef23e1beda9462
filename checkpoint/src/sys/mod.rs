//! Raw system calls the engine needs that `nix` does not wrap (or wraps in a
//! way that loses information). Every `unsafe` block of the engine outside
//! the restore stub lives in this module tree, each with a `// SAFETY:` note.

pub mod inject;
pub mod ipc;
pub mod net;
pub mod ptrace;
pub mod uffd;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Converts a raw syscall return value into a `Result`.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `process_mrelease(pidfd, 0)`: frees now, in the caller's time, the memory
/// of a process that has been sent SIGKILL, alongside its own exit.
pub fn process_mrelease(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a syscall on a pidfd; no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd.as_raw_fd(), 0) }).map(drop)
}

/// The owner `F_GETOWN_EX` reports for `fd` (`F_OWNER_*` type, pid in our
/// namespace) and its `F_GETSIG` signal; `None` when no owner is set.
pub fn file_owner(fd: RawFd) -> io::Result<Option<(i32, i32, i32)>> {
    let mut o = FOwnerEx { kind: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex into `o`.
    if unsafe { libc::fcntl(fd, F_GETOWN_EX, &mut o as *mut FOwnerEx) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_GETSIG takes no argument.
    let sig = unsafe { libc::fcntl(fd, F_GETSIG) };
    if sig < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((o.pid != 0).then_some((o.kind, o.pid, sig)))
}

/// `struct f_owner_ex` (libc does not have it).
#[repr(C)]
pub struct FOwnerEx {
    pub kind: i32,
    pub pid: i32,
}
pub const F_SETSIG: i32 = 10;
pub const F_GETSIG: i32 = 11;
pub const F_SETOWN_EX: i32 = 15;
pub const F_GETOWN_EX: i32 = 16;
pub const F_OWNER_TID: i32 = 0;
pub const F_OWNER_PID: i32 = 1;

/// `struct sched_attr` (SCHED_ATTR_SIZE_VER0 plus the utilisation clamps).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

/// `sched_getattr` of thread `tid`.
pub fn sched_getattr(tid: i32) -> io::Result<SchedAttr> {
    let mut a = SchedAttr::default();
    // SAFETY: sched_getattr writes at most the given size into `a`.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut a as *mut SchedAttr, std::mem::size_of::<SchedAttr>() as u32, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(a)
}

/// `sched_setattr` of thread `tid` (`a.size` is filled in).
pub fn sched_setattr(tid: i32, mut a: SchedAttr) -> io::Result<()> {
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: sched_setattr reads `a.size` bytes from `a`.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a as *const SchedAttr, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// I/O priority of thread `tid` (`ioprio_get(IOPRIO_WHO_PROCESS)`).
pub fn ioprio_get(tid: i32) -> io::Result<u32> {
    // SAFETY: a syscall on integers.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u32)
}

pub fn ioprio_set(tid: i32, prio: u32) -> io::Result<()> {
    // SAFETY: a syscall on integers.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, tid, prio) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A copy of fd `fd` of process `pid`, sharing its open file description
/// (`pidfd_open`, then `pidfd_getfd`).
pub fn take_fd(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    pidfd_getfd(std::os::fd::AsFd::as_fd(&pidfd_open(pid)?), fd)
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of another process's fd, sharing
/// its open file description.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let nfd = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(nfd as RawFd) })
}

pub const KCMP_FILE: i32 = 0;

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: true when both fds refer to the
/// same open file description.
pub fn kcmp_same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> io::Result<bool> {
    // SAFETY: plain syscall with integer arguments.
    let r = check(unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) })?;
    Ok(r == 0)
}

/// `kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {epfd, fd, 0})`: true when fd `fd`
/// of `pid` refers to the file its epoll instance `epfd` watches under that
/// fd number (the first such watch).
pub fn kcmp_epoll_watch(pid: i32, fd: i32, epfd: i32) -> io::Result<bool> {
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: i32 = 7;
    let slot = Slot { efd: epfd as u32, tfd: fd as u32, toff: 0 };
    // SAFETY: the kernel reads a `struct kcmp_epoll_slot` from `slot`, which
    // lives until the call returns.
    let r = check(unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, &slot as *const Slot) })?;
    Ok(r == 0)
}

/// Reads `len` bytes at `addr` of process `pid` into `buf` with
/// `process_vm_readv`, looping over short reads. Returns the bytes read
/// (short only when the remote range stops being readable).
pub fn vm_read(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let local = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: buf.len() - done,
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        // SAFETY: `local` points into `buf`, which is valid for writes of
        // `iov_len` bytes; the remote iovec is only interpreted by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if done > 0 {
                return Ok(done);
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// Reads remote memory of `pid` into the raw destination `dst` (an mmap'd
/// image region owned by the caller).
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes and not aliased.
pub unsafe fn vm_read_raw(pid: i32, addr: u64, dst: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `dst` is valid for `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(dst, len) };
    vm_read(pid, addr, buf)
}

// --- PAGEMAP_SCAN (Linux 6.7+) ---------------------------------------------

pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610; // _IOWR('f', 16, struct pm_scan_arg)

/// A query for [`pagemap_scan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanQuery {
    pub flags: u64,
    pub inverted: u64,
    pub mask: u64,
    pub anyof: u64,
}

impl ScanQuery {
    /// Pages a dump must store: present or swapped, not the zero page, not
    /// page-cache pages of a file (CRIU's selection).
    pub const DUMPABLE: ScanQuery = ScanQuery {
        flags: 0,
        inverted: PAGE_IS_PFNZERO | PAGE_IS_FILE,
        mask: PAGE_IS_PFNZERO | PAGE_IS_FILE,
        anyof: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    };
}

/// Runs `PAGEMAP_SCAN` over `[start, end)` of the process whose
/// `/proc/pid/pagemap` is `pagemap`, appending matching `(start, end)`
/// ranges to `out`.
pub fn pagemap_scan(
    pagemap: BorrowedFd<'_>,
    start: u64,
    end: u64,
    q: ScanQuery,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    let mut regions = vec![PageRegion::default(); 512];
    let mut cur = start;
    while cur < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: q.flags,
            start: cur,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: q.inverted,
            category_mask: q.mask,
            category_anyof_mask: q.anyof,
            return_mask: q.anyof | q.mask,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points to
        // `regions`, valid for `vec_len` entries for the whole call.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for r in &regions[..n as usize] {
            // A region reported again by the next call (see
            // `pagemap_scan_regions`) is only added where it is new.
            match out.last_mut() {
                Some(last) if r.end <= last.1 => {}
                Some(last) if r.start <= last.1 => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if arg.walk_end <= cur {
            break;
        }
        cur = arg.walk_end;
    }
    Ok(())
}

// --- clone3 ------------------------------------------------------------------

#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// Forks the calling (single-threaded) process with `clone3`, asking for pid
/// `pid` in the innermost pid namespace of the child (when `pid > 0`).
/// Returns 0 in the child and the child's pid (as seen by the caller) in the
/// parent, like fork(2).
pub fn clone3_fork(flags: u64, pid: i32) -> io::Result<i32> {
    let tid = [pid as libc::pid_t];
    let mut args = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    if pid > 0 {
        args.set_tid = tid.as_ptr() as u64;
        args.set_tid_size = 1;
    }
    // SAFETY: fork-like clone3 without CLONE_VM: the child gets a copy of the
    // address space and continues on its own copy of the stack, exactly as
    // after fork(2). `args` and `tid` outlive the call.
    let r = unsafe {
        libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    Ok(check(r)? as i32)
}

/// `close_range(first, u32::MAX, 0)`.
pub fn close_from(first: u32) {
    // SAFETY: closing fds is memory safe; callers only do it in processes
    // whose remaining fds above `first` are owned by nobody else.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
}

/// `tee(2)` without consuming: copies up to `len` bytes queued in pipe `from`
/// into pipe `to`.
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall with fds and integers.
    let n = unsafe { libc::tee(from.as_raw_fd(), to.as_raw_fd(), len, libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Bytes queued in a pipe (`FIONREAD`).
pub fn fionread(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

// --- memory mappings owned by the engine ---------------------------------------

/// A mapping in the engine's own address space, unmapped on drop.
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; concurrent access to disjoint ranges
// is coordinated by the users (copy workers write disjoint slices).
unsafe impl Send for Mmap {}
// SAFETY: as above.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset` (shared, or private when `private`).
    pub fn map_fd(fd: BorrowedFd<'_>, offset: u64, len: usize, prot: i32, private: bool) -> io::Result<Mmap> {
        if len == 0 {
            return Ok(Mmap { ptr: std::ptr::NonNull::dangling().as_ptr(), len: 0 });
        }
        let flags = if private { libc::MAP_PRIVATE } else { libc::MAP_SHARED };
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust object.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), offset as libc::off_t) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: p.cast(), len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The mapped bytes (for read-only use).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Which pages of the mapping are resident (`mincore`).
    pub fn resident_pages(&self) -> io::Result<Vec<bool>> {
        let pages = self.len.div_ceil(4096);
        let mut v = vec![0u8; pages];
        if pages == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `v` has one byte per page of the mapping, as mincore requires.
        if unsafe { libc::mincore(self.ptr.cast(), self.len, v.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v.into_iter().map(|b| b & 1 != 0).collect())
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping our own mapping exactly once.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Runs `f` on a fresh thread that first joins the IPC namespace of `pid`
/// (SysV objects are only reachable from inside their namespace).
pub fn in_ipc_ns<T: Send + 'static>(pid: i32, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/ipc"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWIPC).map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("ipc namespace worker panicked"))?
}

/// A SysV segment attached read-only, detached on drop.
pub struct ShmAttached {
    ptr: *const u8,
    len: usize,
}

impl ShmAttached {
    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the kernel attached at least `len` (the segment's size)
        // readable bytes at `ptr`, and they stay attached until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ShmAttached {
    fn drop(&mut self) {
        // SAFETY: detaching our own attachment exactly once; no slice from
        // `bytes` outlives `self`.
        unsafe { libc::shmdt(self.ptr.cast()) };
    }
}

/// `shmat(shmid, NULL, SHM_RDONLY)` in the calling thread's IPC namespace,
/// for a segment of `size` bytes (its `shm_segsz`).
pub fn shm_attach_ro(shmid: i32, size: usize) -> io::Result<ShmAttached> {
    // SAFETY: attaching at a kernel-chosen address aliases no Rust object.
    let p = unsafe { libc::shmat(shmid, std::ptr::null(), libc::SHM_RDONLY) };
    if p as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(ShmAttached { ptr: p.cast(), len: size })
}

/// `get_robust_list(tid)`: the thread's robust futex list head and length.
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: the kernel writes one pointer and one size_t to our locals.
    check(unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head as *mut u64, &mut len as *mut usize) })?;
    Ok((head, len as u64))
}

/// `dup3(fd, at, 0)`: a copy of `fd` at number `at`, not close-on-exec.
pub fn dup_to(fd: RawFd, at: RawFd) -> io::Result<RawFd> {
    // SAFETY: plain syscall with integers; the caller owns whatever was at `at`.
    check(unsafe { libc::dup3(fd, at, 0) }.into()).map(|r| r as RawFd)
}

/// `shmget(key, size, mode | IPC_CREAT | IPC_EXCL)` in the calling thread's
/// IPC namespace.
pub fn shm_create(key: i32, size: usize, mode: u32) -> io::Result<i32> {
    // SAFETY: plain syscall with integers.
    let id = unsafe { libc::shmget(key, size, (mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL) };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(id)
}

/// Writes `(offset, bytes)` runs into SysV segment `id` and sets its owner and mode.
pub fn shm_fill(id: i32, data: &[(u64, Vec<u8>)], uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: attaching at a kernel-chosen address aliases no Rust object.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if p as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut ds: libc::shmid_ds = unsafe {
        // SAFETY: shmid_ds is plain old data.
        std::mem::zeroed()
    };
    // SAFETY: IPC_STAT fills `ds`.
    let size = if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } == 0 { ds.shm_segsz } else { 0 };
    for (off, b) in data {
        let off = *off as usize;
        let n = b.len().min(size.saturating_sub(off));
        // SAFETY: the segment is attached at `p` for `size` bytes and
        // `off + n <= size`; `b` is a separate heap buffer.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p.cast::<u8>().add(off), n) };
    }
    // SAFETY: detaching what we attached.
    unsafe { libc::shmdt(p) };
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as _;
    // SAFETY: IPC_SET reads `ds`.
    if unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `buf` at `addr` of process `pid` with `process_vm_writev`
/// (the remote range must be writable).
pub fn vm_write(pid: i32, addr: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let local = libc::iovec { iov_base: buf[done..].as_ptr() as *mut libc::c_void, iov_len: buf.len() - done };
        let remote = libc::iovec { iov_base: (addr + done as u64) as *mut libc::c_void, iov_len: buf.len() - done };
        // SAFETY: `local` points into `buf`, valid for reads of `iov_len`
        // bytes; the remote iovec is only interpreted by the kernel.
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(if n < 0 { io::Error::last_os_error() } else { io::Error::other("short write") });
        }
        done += n as usize;
    }
    Ok(())
}

/// Faults in the pages of `bytes` (a slice of a file mapping) in one call.
pub fn populate_read(bytes: &[u8]) {
    let start = bytes.as_ptr() as usize & !4095;
    let len = bytes.as_ptr() as usize + bytes.len() - start;
    // SAFETY: advice on a range of our own mapping; it changes no contents.
    unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_READ) };
}

/// Gives the heap's free pages back to the kernel (`malloc_trim`), so that
/// processes forked from here do not inherit them.
pub fn trim_heap() {
    // SAFETY: glibc call with no pointers; it only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

/// One region reported by [`pagemap_scan_regions`], with its categories.
#[derive(Debug, Clone, Copy)]
pub struct ScanRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `PAGEMAP_SCAN` returning every region that has at least one of `anyof`,
/// with all the categories in `ret` reported (regions split where they differ).
pub fn pagemap_scan_regions(pagemap: BorrowedFd<'_>, start: u64, end: u64, anyof: u64, ret: u64, flags: u64) -> io::Result<Vec<ScanRegion>> {
    let mut regions = vec![PageRegion::default(); 1024];
    let mut out = Vec::new();
    let mut cur = start;
    while cur < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags,
            start: cur,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_anyof_mask: anyof,
            return_mask: ret,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points to
        // `regions`, valid for `vec_len` entries for the whole call.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // When the vector fills up, the next call may report again a part
        // of what this one did (seen with PM_SCAN_WP_MATCHING): the first
        // report stands, which was taken before that call re-protected it.
        for r in &regions[..n as usize] {
            let done = out.last().map_or(0, |l: &ScanRegion| l.end);
            if r.end > done {
                out.push(ScanRegion { start: r.start.max(done), end: r.end, categories: r.categories });
            }
        }
        if arg.walk_end <= cur {
            break;
        }
        cur = arg.walk_end;
    }
    Ok(out)
}
