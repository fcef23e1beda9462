//! File descriptors: dump of every fd (number, flags, offset, what it
//! refers to) with shared open file descriptions kept shared (`kcmp`), and
//! their recreation on restore.
//!
//! Kinds handled: regular files (reopened by path; unlinked ones carried in
//! the image), directories, character devices, pipes and FIFOs with the bytes
//! queued in them (read with `tee`, so nothing is consumed), memfds, and
//! pipes from outside the tree on stdio (`Inherited`, supplied by the
//! restorer), eventfd, signalfd, timerfd and epoll ([`crate::events`]), TCP
//! and UDP sockets without connections ([`crate::sockets`]), and Unix socket
//! pairs ([`crate::unix`]).
//! Anything else fails the dump naming the task, fd and kind.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use crate::error::{fault_point, Context, Error, Result};
use crate::image::PagesWriter;
use crate::copier::{Copier, Source};
use crate::model::{FdImage, FileImage, FileKind, FileOwner};
use crate::proc;
use crate::shmem::ShmemTable;
use crate::sys::{self, Mmap};

/// Checks a path the dump recorded; `prefix` is the task's root as seen by
/// the engine ("/" when the paths are already relative to it).
pub fn strip_root(prefix: &str, path: &str, vpid: i32) -> Result<String> {
    let p = if prefix == "/" || prefix.is_empty() {
        path
    } else if let Some(rest) = path.strip_prefix(prefix).filter(|r| r.starts_with('/')) {
        rest
    } else {
        path
    };
    if !p.starts_with('/') {
        return Err(Error::Unsupported { pid: vpid, what: format!("file outside the task's root: {path}") });
    }
    Ok(p.to_string())
}

#[derive(Default)]
pub struct FileTable {
    pub files: Vec<FileImage>,
    /// TCP connections held in repair mode until the tree is killed.
    pub repaired: crate::tcp::Repaired,
    /// One (host pid, fd) holding each file, for kcmp and data capture.
    reps: Vec<(i32, i32)>,
    by_inode: HashMap<(u64, u64), Vec<u32>>,
    /// Which fds refer to each file id: (vpid, fd).
    users: Vec<Vec<(i32, i32)>>,
    /// Mount ids of each mount namespace seen (by its inode), read once.
    mounts: HashMap<u64, std::collections::HashSet<i32>>,
    /// Per file: (`F_OWNER_*` type, host pid, signal) of an O_ASYNC file's owner.
    host_owners: Vec<Option<(i32, i32, i32)>>,
}

fn pipe_ino(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

impl FileTable {
    /// Mount ids visible to task `pid`: read once per mount namespace (a
    /// tree of hundreds of processes shares one).
    fn mount_ids(&mut self, pid: i32, vpid: i32) -> Result<&std::collections::HashSet<i32>> {
        let ns = nix::sys::stat::stat(format!("/proc/{pid}/ns/mnt").as_str()).ctx(|| format!("stat mount namespace of task {vpid}"))?.st_ino;
        match self.mounts.entry(ns) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                Ok(e.insert(proc::mount_ids(pid).ctx(|| format!("read mounts of task {vpid}"))?))
            }
        }
    }

    /// Records every fd of stopped task `pid` (`vpid` inside its namespace).
    pub fn dump_task(
        &mut self,
        pid: i32,
        vpid: i32,
        root_prefix: &str,
        shm: &mut ShmemTable,
        w: &PagesWriter,
        copier: &mut Copier,
    ) -> Result<Vec<FdImage>> {
        let mut out = Vec::new();
        let fds = proc::fds(pid).ctx(|| format!("list fds of task {vpid}"))?;
        let half = fds.len() / 2;
        for (k, fd) in fds.into_iter().enumerate() {
            if k == half {
                fault_point("mid-fd")?;
            }
            let fdpath = format!("/proc/{pid}/fd/{fd}");
            let link = match std::fs::read_link(&fdpath) {
                Ok(l) => l.to_string_lossy().into_owned(),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e).ctx(|| format!("read link of fd {fd} of task {vpid}")),
            };
            let info = proc::fdinfo(pid, fd).ctx(|| format!("read fdinfo {fd} of task {vpid}"))?;
            // Locks are looked up per fd: reading /proc/locks waits for an
            // RCU grace period (10-15 ms here) every time.
            let locks = crate::locks::parse(&info.text).map_err(|what| Error::Unsupported { pid: vpid, what: format!("fd {fd} ({link}, with {what})") })?;
            let st = nix::sys::stat::stat(fdpath.as_str()).ctx(|| format!("stat fd {fd} of task {vpid}"))?;
            let key = (st.st_dev, st.st_ino);
            let mut found = None;
            for &id in self.by_inode.get(&key).map(|v| v.as_slice()).unwrap_or(&[]) {
                let (rp, rfd) = self.reps[id as usize];
                if sys::kcmp_same_file(pid, fd, rp, rfd).ctx(|| format!("compare fd {fd} of task {vpid}"))? {
                    found = Some(id);
                    break;
                }
            }
            let id = match found {
                Some(id) => id,
                None => {
                    // A file on a mount the task's namespace does not have
                    // (a host file on a container's stdio) cannot be reopened
                    // there: on stdio the restorer supplies it, as runc does.
                    let outside = link.starts_with('/') && info.mnt_id != 0 && !self.mount_ids(pid, vpid)?.contains(&info.mnt_id);
                    let kind = if outside && fd <= 2 {
                        FileKind::Inherited { key: format!("file:{link}") }
                    } else if outside {
                        return Err(Error::Unsupported {
                            pid: vpid,
                            what: format!("fd {fd} ({link}, a file outside the task's mount namespace)"),
                        });
                    } else {
                        self.classify(pid, vpid, fd, &link, &info, &st, root_prefix, shm, w, copier)?
                    };
                    let id = self.files.len() as u32;
                    // The owner of an O_ASYNC file, by host pid for now (see finish_owners).
                    let owner = if info.flags & libc::O_ASYNC != 0 {
                        crate::sys::take_fd(pid, fd)
                            .and_then(|f| crate::sys::file_owner(f.as_raw_fd()))
                            .ctx(|| format!("read the owner of fd {fd} of task {vpid}"))?
                    } else {
                        None
                    };
                    self.files.push(FileImage { id, flags: info.flags & !libc::O_CLOEXEC, pos: info.pos, kind, owner: None });
                    self.host_owners.push(owner);
                    self.reps.push((pid, fd));
                    self.users.push(Vec::new());
                    self.by_inode.entry(key).or_default().push(id);
                    id
                }
            };
            if !locks.is_empty() && !crate::locks::lockable(&self.files[id as usize].kind) {
                return Err(Error::Unsupported { pid: vpid, what: format!("fd {fd} ({link}, a file lock on other than a regular file or directory)") });
            }
            self.users[id as usize].push((vpid, fd));
            out.push(FdImage { fd, file: id, cloexec: info.flags & libc::O_CLOEXEC != 0, locks });
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &mut self,
        pid: i32,
        vpid: i32,
        fd: i32,
        link: &str,
        info: &proc::FdInfo,
        st: &nix::sys::stat::FileStat,
        root_prefix: &str,
        shm: &mut ShmemTable,
        w: &PagesWriter,
        copier: &mut Copier,
    ) -> Result<FileKind> {
        let fmt = st.st_mode & libc::S_IFMT;
        let unsupported = |what: String| Error::Unsupported { pid: vpid, what: format!("fd {fd} ({what})") };
        if let Some(ino) = pipe_ino(link) {
            let capacity = pipe_capacity(pid, fd).unwrap_or(65536);
            return Ok(FileKind::Pipe { pipe: ino, capacity, data: None });
        }
        if let Some(name) = link.strip_prefix("/memfd:") {
            let name = name.trim_end_matches(" (deleted)");
            return Ok(FileKind::Memfd { shmem: shm.memfd(pid, fd, name, w, copier)? });
        }
        if link.starts_with("socket:") {
            return crate::sockets::dump(pid, vpid, fd, link, w, copier, &mut self.repaired);
        }
        if let Some(name) = link.strip_prefix("anon_inode:") {
            return crate::events::dump(pid, vpid, fd, name, &info.text);
        }
        if !link.starts_with('/') {
            return Err(unsupported(link.to_string()));
        }
        match fmt {
            libc::S_IFREG if link.ends_with(" (deleted)") => {
                let f = File::open(format!("/proc/{pid}/fd/{fd}")).ctx(|| format!("open unlinked fd {fd} of task {vpid}"))?;
                let size = st.st_size as u64;
                if size > 1 << 30 {
                    return Err(unsupported(format!("unlinked file of {size} bytes")));
                }
                let map = Arc::new(Mmap::map_fd(f.as_fd(), 0, size as usize, libc::PROT_READ, true).ctx(|| "map unlinked file".into())?);
                let data = copier.add(w, Source::Local { map, offset: 0 }, size);
                let path = strip_root(root_prefix, link.trim_end_matches(" (deleted)"), vpid)?;
                Ok(FileKind::Unlinked { path, mode: st.st_mode & 0o7777, data })
            }
            libc::S_IFREG => Ok(FileKind::Regular { path: strip_root(root_prefix, link, vpid)?, size: st.st_size as u64, mode: st.st_mode & 0o7777 }),
            libc::S_IFDIR => Ok(FileKind::Directory { path: strip_root(root_prefix, link, vpid)? }),
            libc::S_IFCHR => Ok(FileKind::CharDevice { path: strip_root(root_prefix, link, vpid)?, rdev: st.st_rdev }),
            libc::S_IFIFO => {
                let capacity = pipe_capacity(pid, fd).unwrap_or(65536);
                Ok(FileKind::Fifo { path: strip_root(root_prefix, link, vpid)?, pipe: st.st_ino, capacity, data: None })
            }
            _ => Err(unsupported(format!("file type {fmt:o} at {link}"))),
        }
    }

    /// After all tasks: marks pipes that lead out of the tree on stdio as
    /// `Inherited`, and captures the bytes queued in the others.
    pub fn finish_pipes(&mut self, w: &PagesWriter, copier: &mut Copier) -> Result<()> {
        // Which ends of each pipe the tree holds.
        let mut ends: HashMap<u64, (bool, bool)> = HashMap::new();
        for f in &self.files {
            if let FileKind::Pipe { pipe, .. } | FileKind::Fifo { pipe, .. } = f.kind {
                let e = ends.entry(pipe).or_default();
                match f.flags & libc::O_ACCMODE {
                    libc::O_RDONLY => e.0 = true,
                    libc::O_WRONLY => e.1 = true,
                    _ => *e = (true, true),
                }
            }
        }
        let mut captured: HashMap<u64, bool> = HashMap::new();
        for i in 0..self.files.len() {
            let (pid, fd) = self.reps[i];
            let on_stdio = self.users[i].iter().all(|&(_, fd)| fd <= 2);
            let f = &mut self.files[i];
            let (pipe, is_fifo) = match f.kind {
                FileKind::Pipe { pipe, .. } => (pipe, false),
                FileKind::Fifo { pipe, .. } => (pipe, true),
                _ => continue,
            };
            let (r, wr) = ends[&pipe];
            if !is_fifo && on_stdio && !(r && wr) {
                f.kind = FileKind::Inherited { key: format!("pipe:[{pipe}]") };
                continue;
            }
            // Queued bytes are stored once per pipe, on the first end seen.
            if captured.insert(pipe, true).is_some() || !r {
                continue;
            }
            let bytes = peek_pipe(pid, fd).ctx(|| format!("read pipe data of fd {fd} of task {pid}"))?;
            if !bytes.is_empty() {
                let len = bytes.len() as u64;
                let blob = copier.add(w, Source::Bytes(bytes), len);
                match &mut f.kind {
                    FileKind::Pipe { data, .. } | FileKind::Fifo { data, .. } => *data = Some(blob),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// After all tasks, the links between files: checks both ends of each
    /// Unix socket pair are in the tree ([`crate::unix`]) and names the file
    /// behind every epoll watch ([`crate::events`]).
    pub fn finish_links(&mut self) -> Result<()> {
        crate::unix::check_pairs(&self.files, |i| self.users[i][0])?;
        crate::tcp::check_peers(&self.files, |i| self.users[i][0])?;
        let by_fd: HashMap<(i32, i32), u32> = self.users.iter().enumerate().flat_map(|(id, us)| us.iter().map(move |&u| (u, id as u32))).collect();
        for (f, &(pid, fd)) in self.files.iter_mut().zip(&self.reps) {
            crate::events::resolve_watches(f, pid, fd, &by_fd)?;
        }
        Ok(())
    }

    /// After all tasks: the owner of each O_ASYNC file, by its pid in the
    /// tree (`vpid_of` maps host pids). Only a process of the tree that
    /// holds the file can own it here.
    pub fn finish_owners(&mut self, vpid_of: impl Fn(i32) -> Option<i32>) -> Result<()> {
        for (i, owner) in self.host_owners.iter().enumerate() {
            let Some((kind, host, signal)) = *owner else { continue };
            let (vpid, fd) = self.users[i][0];
            let unsupported = |why: &str| Error::Unsupported { pid: vpid, what: format!("fd {fd} (O_ASYNC signals go to {why})") };
            let pid = match kind {
                crate::sys::F_OWNER_PID | crate::sys::F_OWNER_TID => vpid_of(host).ok_or_else(|| unsupported(&format!("process {host}, outside the tree")))?,
                _ => return Err(unsupported(&format!("process group {host}"))),
            };
            // A thread owner is a process's main thread, or not in `users`.
            if !self.users[i].iter().any(|&(p, _)| p == pid) {
                return Err(unsupported(&format!("task {pid}, which is not a process holding the file")));
            }
            self.files[i].owner = Some(FileOwner { pid, signal, thread: kind == crate::sys::F_OWNER_TID });
        }
        Ok(())
    }

    pub fn fill_sums(&mut self, sums: &HashMap<u64, u64>) {
        for f in &mut self.files {
            let blobs: Vec<&mut crate::model::Blob> = match &mut f.kind {
                FileKind::Unlinked { data, .. } => vec![data],
                FileKind::Pipe { data: Some(d), .. } | FileKind::Fifo { data: Some(d), .. } | FileKind::UnixPair { data: Some(d), .. } => vec![d],
                FileKind::TcpConnection { state, .. } => [&mut state.send, &mut state.recv].into_iter().flatten().collect(),
                _ => Vec::new(),
            };
            for b in blobs {
                if let Some(s) = sums.get(&b.off) {
                    b.xxh3 = *s;
                }
            }
        }
    }
}

fn pipe_capacity(pid: i32, fd: i32) -> std::io::Result<u32> {
    let f = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(format!("/proc/{pid}/fd/{fd}"))?;
    let n = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).map_err(std::io::Error::from)?;
    Ok(n as u32)
}

/// The bytes queued in the pipe behind fd `fd` of `pid`, left in place.
fn peek_pipe(pid: i32, fd: i32) -> std::io::Result<Vec<u8>> {
    let src = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(format!("/proc/{pid}/fd/{fd}"))?;
    let n = sys::fionread(src.as_fd())?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let (r, wfd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(wfd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(n.next_power_of_two().max(4096) as i32))?;
    let mut got = 0;
    while got < n {
        let k = sys::tee(src.as_fd(), wfd.as_fd(), n - got)?;
        if k == 0 {
            break;
        }
        got += k;
        if got < n {
            // tee copies from the start of the pipe each time; one pass is all there is.
            break;
        }
    }
    let mut out = vec![0u8; got];
    let mut rf = File::from(r);
    std::io::Read::read_exact(&mut rf, &mut out)?;
    Ok(out)
}
