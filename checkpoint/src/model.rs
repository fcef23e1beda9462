//! The engine's data model: what a checkpoint image describes.
//!
//! Everything here is plain data (serde), written by `dump`, read by
//! `restore` and printed by `inspect`. Ids (`pid`, `tid`, `pgid`, `sid`)
//! are as seen *inside* the dumped pid namespace; they are the ids the
//! restore recreates. Large binary payloads (memory pages, bytes sitting in
//! pipes, contents of unlinked files) are not stored here but in the raw
//! pages file, referenced by [`Blob`].

use crate::image::compact::compact_record;
use serde::{Deserialize, Serialize};

/// A byte range of the raw pages file (`pages.img`), page aligned at `off`,
/// with the xxh3-64 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub off: u64,
    pub len: u64,
    pub xxh3: u64,
}

/// The whole checkpoint of one process tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TreeImage {
    /// Pid of the tree root inside its pid namespace (1 for a container).
    pub root: i32,
    /// Every process, parents before their children.
    pub tasks: Vec<TaskImage>,
    /// Every distinct open file description, referenced by `FdImage::file`.
    pub files: Vec<FileImage>,
    /// Shared memory objects, referenced by `VmaKind::Shmem`.
    pub shmem: Vec<ShmemImage>,
    /// SysV semaphore sets and message queues of the tree's own IPC
    /// namespace (`crate::ipc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sem_sets: Vec<SemSet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msg_queues: Vec<MsgQueue>,
    /// Bytes of the vdso text at dump time (to refuse a restore on a kernel
    /// whose vdso differs).
    pub vdso_xxh3: Option<u64>,
    /// Host facts at dump time, for the user and for compatibility checks.
    pub host: HostInfo,
}

/// Owner and permissions of a SysV IPC object, and its key and id.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpcPerm {
    pub key: i32,
    pub id: i32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A SysV semaphore set: its semaphores' values. (Undo adjustments of
/// `SEM_UNDO` operations belong to processes and are not kept.)
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SemSet {
    pub perm: IpcPerm,
    pub values: Vec<u16>,
}

/// A SysV message queue: its byte limit and queued messages, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MsgQueue {
    pub perm: IpcPerm,
    pub qbytes: u64,
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    pub mtype: i64,
    #[serde(with = "crate::image::bytes")]
    pub text: Vec<u8>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub kernel: String,
    /// XCR0 feature mask of the dump host (xsave components in use).
    pub xcr0: u64,
    pub page_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Running,
    /// Stopped by a job-control signal; re-stopped with it after restore.
    Stopped { signal: i32 },
    /// Exited but not reaped; `code` is the raw wait status.
    Zombie { status: i32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskImage {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: TaskState,
    pub comm: String,
    /// Threads, the group leader first. Empty for zombies.
    pub threads: Vec<ThreadImage>,
    /// Address space; `None` for zombies.
    pub mm: Option<MmImage>,
    pub fds: Vec<FdImage>,
    /// `rt_sigaction` state for signals 1..=64 (index 0 is signal 1).
    pub sigactions: Vec<SigAction>,
    /// Signals pending for the whole process (raw 128-byte siginfo).
    #[serde(with = "crate::image::bytes::list")]
    pub shared_pending: Vec<Vec<u8>>,
    pub creds: Creds,
    pub fs: FsInfo,
    pub rlimits: Vec<Rlimit>,
    pub itimers: [Itimer; 3],
    /// POSIX timers (`timer_create`), by id (`crate::timers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub posix_timers: Vec<PosixTimer>,
    pub personality: u64,
    pub pdeath_signal: i32,
    pub child_subreaper: bool,
    pub dumpable: i32,
    /// `PR_GET_THP_DISABLE`: 0, 1 (disabled) or 3 (disabled except where
    /// `MADV_HUGEPAGE` asks, `PR_THP_DISABLE_EXCEPT_ADVISED`, Linux 6.18).
    #[serde(default)]
    pub thp_disable: u32,
    /// `membarrier` commands the process registered for (bits of
    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED*`, see `crate::task`).
    #[serde(default)]
    pub membarrier: u32,
    pub no_new_privs: bool,
    pub oom_score_adj: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadImage {
    pub tid: i32,
    /// `struct user_regs_struct` (27 u64), already normalised for syscall restart.
    pub regs: Vec<u64>,
    /// Raw `NT_X86_XSTATE` buffer.
    #[serde(with = "crate::image::bytes")]
    pub xsave: Vec<u8>,
    pub sigmask: u64,
    /// Signals pending for this thread only (raw 128-byte siginfo).
    #[serde(with = "crate::image::bytes::list")]
    pub pending: Vec<Vec<u8>>,
    pub rseq: Option<Rseq>,
    pub sigaltstack: SigAltStack,
    pub clear_child_tid: u64,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub comm: String,
    /// Seccomp filter programs (raw `struct sock_filter` arrays), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::image::bytes::list")]
    pub seccomp: Vec<Vec<u8>>,
    /// Scheduling policy, nice value and timer slack (`crate::sched`).
    #[serde(default)]
    pub sched: Sched,
    /// CPUs the thread is restricted to, when narrower than its cpuset's
    /// (`crate::sched`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<u32>>,
}

/// A thread's `struct sched_attr` fields and timer slack.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sched {
    /// `SCHED_OTHER`, `SCHED_FIFO`, `SCHED_RR`, `SCHED_BATCH`, `SCHED_IDLE`
    /// or `SCHED_DEADLINE`.
    pub policy: u32,
    /// `SCHED_FLAG_RESET_ON_FORK` and the other `sched_attr` flags kept.
    pub flags: u64,
    pub nice: i32,
    /// Real-time priority (1-99 for FIFO and RR, else 0).
    pub priority: u32,
    /// `SCHED_DEADLINE` parameters, in nanoseconds.
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    /// `/proc/TID/timerslack_ns`; 0 for the default.
    pub timerslack_ns: u64,
    /// I/O priority (`ioprio_get`: class << 13 | level); 0 for none set.
    #[serde(default)]
    pub ioprio: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Rseq {
    pub ptr: u64,
    pub len: u32,
    pub sig: u32,
    pub flags: u32,
    /// Value of `rseq->rseq_cs` at dump time, poked back just before release.
    pub cs: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SigAltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

/// Written as `[handler, flags, restorer, mask]` (`crate::image::compact`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}
compact_record!(SigAction { handler, flags, restorer, mask });

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Itimer {
    pub interval_us: u64,
    pub value_us: u64,
}

/// One POSIX timer of a process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PosixTimer {
    /// The id `timer_create` gave it (the application holds it).
    pub id: i32,
    pub clock: i32,
    /// `SIGEV_SIGNAL`, `SIGEV_NONE` or `SIGEV_THREAD_ID`.
    pub notify: i32,
    pub signal: i32,
    /// `sigev_value`, handed to the application with each signal.
    pub value: u64,
    /// The thread a `SIGEV_THREAD_ID` timer signals (tid in the tree).
    pub tid: i32,
    /// Time to the next expiry (0: disarmed) and period.
    pub value_ns: u64,
    pub interval_ns: u64,
}

/// Written as `[resource, cur, max]` (`crate::image::compact`).
#[derive(Debug, Clone, Copy)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}
compact_record!(Rlimit { resource, cur, max });

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Creds {
    /// real, effective, saved, fs
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub securebits: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FsInfo {
    pub cwd: String,
    pub root: String,
    pub umask: u32,
}

/// The address space of one process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MmImage {
    pub vmas: Vec<Vma>,
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: Vec<u64>,
    pub exe: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: i32,
    /// MAP_PRIVATE or MAP_SHARED, plus MAP_GROWSDOWN where the VMA grows down.
    pub flags: i32,
    /// Offset into the backing object, in bytes.
    pub pgoff: u64,
    pub kind: VmaKind,
    /// MADV_* hints that must be re-applied (VmFlags: dd, dc, hg, nh, wf).
    pub madvise: Vec<i32>,
    /// A private mapping that is read-only now but was writable once: the
    /// kernel still charges it to the commit limit (VmFlags "ac"), so it is
    /// mapped writable and made read-only after its pages are in.
    #[serde(default, skip_serializing_if = "is_false")]
    pub accounted: bool,
    /// `mlock`ed: [`MLOCK_ALL`] (VmFlags "lo") or [`MLOCK_ON_FAULT`] (also
    /// "lf", `mlock2(MLOCK_ONFAULT)`); 0 if not locked.
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub mlock: u8,
    /// Populated pages of private memory, in address order.
    pub pages: Vec<PageRun>,
}

impl Vma {
    /// The protection to map the VMA with on restore: writable while its
    /// pages go in where [`Vma::accounted`] says so, else its own.
    pub fn map_prot(&self) -> i32 {
        if self.accounted && self.flags & libc::MAP_SHARED == 0 {
            self.prot | libc::PROT_WRITE
        } else {
            self.prot
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmaKind {
    /// Private anonymous memory (heap, stacks, malloc arenas, reservations).
    Anon,
    /// A file mapping; for MAP_PRIVATE only the copied-on-write pages are in `pages`.
    File { path: String },
    /// A mapping of shared memory object `id` (anonymous shared, memfd or SysV).
    Shmem { id: u32 },
    /// `[vvar]`, `[vvar_vclock]` and `[vdso]`: placed by moving the restoring
    /// kernel's vdso block; never dumped.
    Vvar,
    VvarVclock,
    Vdso,
}

/// `npages` pages starting at `addr`, their bytes in `data`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PageRun {
    pub addr: u64,
    pub npages: u64,
    pub data: Blob,
    /// Which image's `pages.img` holds `data`: 0 this one, 1 its parent
    /// (`--parent-path`), 2 the parent's parent, and so on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parent: u32,
}

pub const MLOCK_ALL: u8 = 1;
pub const MLOCK_ON_FAULT: u8 = 2;

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A pre-dump (`checkpoint --pre-dump`): memory only. Each process keeps a
/// userfaultfd at `uffd_fd` that tracks what it writes until the next dump.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PreDumpImage {
    pub tasks: Vec<PreDumpTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreDumpTask {
    /// Pid inside the tree's pid namespace.
    pub pid: i32,
    /// The tracker's fd number inside the process.
    pub uffd_fd: i32,
    /// Pages copied so far, sorted by address.
    pub runs: Vec<PageRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdImage {
    pub fd: i32,
    pub file: u32,
    pub cloexec: bool,
    /// File locks held through this fd (`crate::locks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<FileLock>,
}

/// A file lock, as `/proc/PID/fdinfo` lists it for the fd it was taken
/// through: POSIX record locks belong to the process, OFD record locks and
/// `flock` locks to the open file description.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct FileLock {
    pub kind: LockKind,
    /// A write (exclusive) lock; otherwise a read (shared) one.
    pub write: bool,
    /// First byte locked.
    pub start: u64,
    /// Last byte locked; `None`: up to any end of the file. `flock` locks
    /// cover the whole file (start 0, no end).
    pub end: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum LockKind {
    Posix,
    Ofd,
    Flock,
}

/// One open file description (shared by every fd that refers to it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileImage {
    pub id: u32,
    /// open(2) flags without O_CLOEXEC (O_RDONLY/O_WRONLY/O_RDWR, O_APPEND, O_NONBLOCK...).
    pub flags: i32,
    pub pos: i64,
    pub kind: FileKind,
    /// Who gets this file's `O_ASYNC` signal, if anyone was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<FileOwner>,
}

/// What `TCP_REPAIR` reads of an established connection.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TcpState {
    /// Sequence number after the last byte written (`TCP_QUEUE_SEQ` of the
    /// send queue) and after the last byte received (of the receive queue).
    pub snd_seq: u32,
    pub rcv_seq: u32,
    /// The send queue (sent but not acknowledged, then not yet sent: the
    /// last `unsent` bytes) and the receive queue (received, not read).
    pub send: Option<Blob>,
    pub unsent: u32,
    pub recv: Option<Blob>,
    /// `TCPI_OPT_*` (timestamps 1, SACK 2, window scaling 4), the window
    /// scales, the MSS and the timestamp clock (`TCP_TIMESTAMP`).
    pub tcp_options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub mss: u32,
    pub timestamp: u32,
    /// `TCP_REPAIR_WINDOW`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
}

/// The process `F_SETOWN` named for a file (a process of the tree that
/// holds the file; `thread`: its main thread, `F_OWNER_TID`), and the
/// signal `F_SETSIG` chose (0: SIGIO).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileOwner {
    pub pid: i32,
    pub signal: i32,
    pub thread: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file reopened by path; `size` is checked on restore.
    Regular { path: String, size: u64, mode: u32 },
    /// A regular file unlinked while open; its contents travel in the image.
    Unlinked { path: String, mode: u32, data: Blob },
    Directory { path: String },
    /// A character device node such as /dev/null, reopened by path.
    CharDevice { path: String, rdev: u64 },
    /// One end of a pipe. Both ends carry the same `pipe` id; the bytes that
    /// sat in the pipe are stored once, on the first end.
    Pipe { pipe: u64, capacity: u32, data: Option<Blob> },
    /// A named pipe, reopened by path; queued bytes as for pipes.
    Fifo { path: String, pipe: u64, capacity: u32, data: Option<Blob> },
    /// A memfd; contents in shared memory object `shmem`.
    Memfd { shmem: u32 },
    /// A file description from outside the tree (typically a stdio pipe of
    /// the container's caller, `key` = "pipe:\[ino\]"): the restorer supplies
    /// its replacement, as runc does with `descriptors.json`.
    Inherited { key: String },
    /// An eventfd: its counter, and whether reads take one at a time.
    EventFd { count: u64, semaphore: bool },
    /// A signalfd reading the signals of `mask` (bit n-1 for signal n).
    SignalFd { mask: u64 },
    /// A timerfd: its clock, the time left and the period in nanoseconds
    /// (0: disarmed, one-shot), its `timerfd_settime` flags and the
    /// expirations nobody has read yet.
    TimerFd { clock: i32, value_ns: u64, interval_ns: u64, flags: i32, ticks: u64 },
    /// An epoll instance. Task `owner` registers its watches once its fds
    /// are in place: each `fd` of a watch is a number in that task's fd
    /// table (the key the application uses with `epoll_ctl`).
    Epoll { owner: i32, watches: Vec<EpollWatch> },
    /// A TCP (`stream`) or UDP socket of `family` AF_INET or AF_INET6 with
    /// no connection state: bound to `local` (`None`: unbound), listening
    /// with `backlog`, or (UDP only) connected to `peer`. Addresses are
    /// written as `std::net::SocketAddr` prints them.
    InetSocket { family: i32, stream: bool, local: Option<String>, peer: Option<String>, backlog: Option<i32>, options: SocketOptions },
    /// One end (`end` 0 or 1) of a connected pair of Unix sockets of type
    /// `ty` without a name, both ends in the tree; `pair` is the pair's id.
    /// `shutdown` holds `SHUT_RD` (1) / `SHUT_WR` (2)-like bits as the
    /// kernel reports them (receive, send); `data`, the bytes waiting to be
    /// read on this end (stream sockets only).
    /// `name`: the address the end is bound to, for connections made
    /// through a named listener (the accepted end has the listener's; a
    /// client that bound itself first, its own).
    UnixPair {
        ty: i32,
        pair: u64,
        end: u8,
        shutdown: u8,
        data: Option<Blob>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Vec<u8>>,
    },
    /// An established TCP connection whose peer is also in the tree
    /// (`crate::tcp`).
    TcpConnection { family: i32, local: String, peer: String, options: SocketOptions, state: TcpState },
    /// A listening Unix socket of type `ty` bound to `name` (a path, or an
    /// abstract name starting with a 0 byte), with its backlog; for a path,
    /// the socket file's mode and owner.
    UnixListener { ty: i32, name: Vec<u8>, backlog: i32, file: Option<SocketFile> },
}

/// Mode (permission bits) and owner of the file a Unix socket is bound to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketFile {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The socket options an Internet socket is restored with.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketOptions {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub broadcast: bool,
    pub v6only: bool,
    pub nodelay: bool,
}

/// One file watched by an epoll instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpollWatch {
    pub fd: i32,
    /// The watched file's id.
    pub file: u32,
    pub events: u32,
    pub data: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShmemImage {
    pub id: u32,
    pub size: u64,
    pub kind: ShmemKind,
    /// Populated pages; `addr` is the offset into the object.
    pub pages: Vec<PageRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShmemKind {
    /// MAP_SHARED|MAP_ANONYMOUS memory (`/dev/zero (deleted)`).
    Anon,
    Memfd { name: String, seals: i32 },
    SysV { key: i32, shmid: i32, mode: u32, uid: u32, gid: u32 },
}
