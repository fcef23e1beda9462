//! Unix sockets: pairs of connected sockets whose two ends are both held in
//! the tree (what socketpair(2) makes, which event loops such as Python's
//! asyncio and nginx's channels use, and connections made through a named
//! listener, as a web server's to PHP-FPM), and listening sockets bound to
//! a path or an abstract name (PostgreSQL's, PHP-FPM's).
//!
//! The dump asks `sock_diag` (in the tree's network namespace) for each
//! socket's peer, shutdown state, bound file and accept queue, and reads
//! the bytes queued on a stream end with `MSG_PEEK`, leaving them in place.
//! Both ends of a pair carry the pair's id (the lower inode) and their end
//! number; a listener its name, backlog and, for a path, the socket file's
//! mode and owner (the file must still be this socket's). An end of a
//! connection made through a listener keeps its name (the accepted end the
//! listener's, a client that bound itself its own). Refused, with the task
//! and fd: a named socket that neither listens nor is connected (syslogd's
//! `/dev/log`), a named datagram socket, a listener with connections not
//! yet accepted, an
//! unconnected socket without a name, a peer outside the tree, file
//! descriptors in flight, and queued messages on datagram or seqpacket
//! ends.
//!
//! The restore stub makes each pair with socketpair(2), or, for a named
//! connection, by connecting through a listener of the moment bound to the
//! accepted end's name ([`connect_named`], before any listener of the tree
//! is made), writes the queued bytes of an end into its peer (so they wait
//! on that end again), then
//! shuts down the writing side of the ends that were shut down (the peer's
//! reading side follows, as it did). A listener is bound again, after a
//! stale socket file at its path is removed.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::copier::{Copier, Source};
use crate::error::{Error, Result};
use crate::image::PagesWriter;
use crate::model::{FileImage, FileKind, SocketFile};
use crate::sys::net;

/// The kind of Unix socket `dup` (a copy of fd `fd` of task `pid`).
pub fn dump(pid: i32, vpid: i32, fd: i32, link: &str, dup: &OwnedFd, w: &PagesWriter, copier: &mut Copier) -> Result<FileKind> {
    let unsupported = |what: &str| Error::Unsupported { pid: vpid, what: format!("fd {fd} ({link}, unix socket {what})") };
    let io = |what: &str| {
        let what = format!("{what} of unix socket fd {fd} of task {vpid}");
        move |e: std::io::Error| Error::Io { context: what, cause: e }
    };
    let s = dup.as_raw_fd();
    let ty = net::sockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE).map_err(io("read the type"))?;
    let name = net::unix_name(s).map_err(io("read the name"))?;
    let ino = nix::sys::stat::fstat(s).map_err(|e| io("stat")(e.into()))?.st_ino as u32;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(io("open the network namespace"))?;
    let nl = net::sock_diag_socket_in(ns.as_fd()).map_err(io("open sock_diag"))?;
    let diag = net::unix_diag(nl.as_raw_fd(), ino).map_err(io("ask sock_diag about"))?;
    let listening = name.is_some() && net::sockopt_int(s, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(io("read SO_ACCEPTCONN"))? != 0;
    if let Some(name) = name.as_ref().filter(|_| !listening) {
        let shown = String::from_utf8_lossy(name).replace('\0', "@");
        if diag.peer == 0 {
            return Err(unsupported(&format!("bound to {shown} and not listening")));
        }
        if ty == libc::SOCK_DGRAM {
            return Err(unsupported(&format!("bound to {shown} and connected: datagram sockets with names cannot be saved")));
        }
    }
    if let Some(name) = name.clone().filter(|_| listening) {
        let shown = String::from_utf8_lossy(&name).replace('\0', "@");
        if diag.rqueue > 0 {
            return Err(unsupported(&format!("listening on {shown} with {} connections not yet accepted", diag.rqueue)));
        }
        let file = if name[0] == 0 {
            None
        } else {
            // The file, as the task sees it; it must still be this socket's.
            let path = String::from_utf8(name.clone()).ok().filter(|p| p.starts_with('/'));
            let path = path.ok_or_else(|| unsupported(&format!("bound to the relative or non-UTF-8 path {shown}")))?;
            let st = nix::sys::stat::lstat(format!("/proc/{pid}/root{path}").as_str()).ok();
            match st {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK && st.st_ino as u32 == diag.vfs_ino => {
                    Some(SocketFile { mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid })
                }
                _ => return Err(unsupported(&format!("bound to {path}, which is gone or another file now"))),
            }
        };
        return Ok(FileKind::UnixListener { ty, name, backlog: diag.wqueue as i32, file });
    }
    if diag.peer == 0 {
        return Err(unsupported("that is not connected"));
    }
    let queued = crate::sys::fionread(dup.as_fd()).map_err(io("read the queue"))?;
    let data = match (queued, ty) {
        (0, _) => None,
        (n, libc::SOCK_STREAM) => match net::peek_stream(s, n).map_err(io("read the queued bytes"))? {
            Some(bytes) if bytes.len() == n => Some(copier.add(w, Source::Bytes(bytes), n as u64)),
            Some(_) => return Err(unsupported("whose queued bytes cannot be read in one piece")),
            None => return Err(unsupported("with file descriptors in flight")),
        },
        _ => return Err(unsupported("with messages queued")),
    };
    let pair = ino.min(diag.peer) as u64;
    Ok(FileKind::UnixPair { ty, pair, end: u8::from(ino != pair as u32), shutdown: diag.shutdown, data, name })
}

/// After all tasks: each pair's two ends are in the tree. `who` gives a
/// (vpid, fd) holding each file.
pub fn check_pairs(files: &[FileImage], who: impl Fn(usize) -> (i32, i32)) -> Result<()> {
    let mut ends: HashMap<u64, [usize; 2]> = HashMap::new();
    for f in files {
        if let FileKind::UnixPair { pair, end, .. } = f.kind {
            ends.entry(pair).or_default()[end as usize] += 1;
        }
    }
    for (i, f) in files.iter().enumerate() {
        if let FileKind::UnixPair { pair, .. } = f.kind {
            if ends[&pair] != [1, 1] {
                let (vpid, fd) = who(i);
                return Err(Error::Unsupported { pid: vpid, what: format!("fd {fd} (unix socket connected to a process outside the tree)") });
            }
        }
    }
    Ok(())
}

fn type_name(ty: i32) -> &'static str {
    match ty {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "?",
    }
}

/// A one-line description for `stasis inspect`.
pub fn describe(kind: &FileKind) -> Option<String> {
    if let FileKind::UnixListener { ty, name, backlog, file } = kind {
        let mode = file.map(|f| format!(", mode {:o}, owner {}:{}", f.mode, f.uid, f.gid)).unwrap_or_default();
        return Some(format!("unix {} socket listening on {} (backlog {backlog}{mode})", type_name(*ty), String::from_utf8_lossy(name).replace('\0', "@")));
    }
    let FileKind::UnixPair { ty, pair, end, shutdown, data, name } = kind else { return None };
    let ty = type_name(*ty);
    let name = name.as_ref().map(|n| format!(" named {}", String::from_utf8_lossy(n).replace('\0', "@"))).unwrap_or_default();
    let queued = data.map(|d| format!(", {} bytes queued", d.len)).unwrap_or_default();
    let shut = if *shutdown != 0 { format!(", shutdown {shutdown}") } else { String::new() };
    Some(format!("unix {ty} socket pair {pair} end {end}{name}{queued}{shut}"))
}

// Restore side of listeners: runs in the restore stub, which reports errors
// as strings.

/// Makes a listening Unix socket again: a stale socket file left at its
/// path is removed first (anything else there is an error), and the new
/// file gets the old one's mode and owner.
/// For a path `name`: its C string, after removing a stale socket file
/// there (anything else at the path is an error). `None` for an abstract
/// name.
fn clear_path(name: &[u8]) -> std::result::Result<Option<std::ffi::CString>, String> {
    let shown = String::from_utf8_lossy(name).replace('\0', "@");
    let path = (name[0] != 0).then(|| std::ffi::CString::new(name.to_vec())).transpose().map_err(|_| format!("bad socket path {shown}"))?;
    if let Some(p) = &path {
        // SAFETY: all-zero bytes are a valid stat; lstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: lstat of a valid C string into a live stat.
        if unsafe { libc::lstat(p.as_ptr(), &mut st) } == 0 {
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(format!("{shown} exists and is not a socket"));
            }
            // SAFETY: unlinking the stale socket file.
            if unsafe { libc::unlink(p.as_ptr()) } < 0 {
                return Err(format!("remove the old socket file {shown}: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(path)
}

/// A connected pair of Unix sockets of type `ty` whose ends are bound to
/// `names`, as when a client connects to a named listener: a listener of
/// the moment is bound to the name of end `server` (the accepted one), the
/// other end (bound to its own name first, if it has one) connects to it,
/// and the listener goes again (with its socket file; the tree's own
/// listener, made later, binds the name again). Returns the ends in order.
pub fn connect_named(ty: i32, names: [Option<&[u8]>; 2], server: usize) -> std::result::Result<(i32, i32), String> {
    let name = names[server].ok_or("the accepted end has no name")?;
    let shown = String::from_utf8_lossy(name).replace('\0', "@");
    let err = |what: &str| format!("{what} (connection through {shown}): {}", std::io::Error::last_os_error());
    let mut fds = Vec::new();
    let r = (|| {
        let mut sock = || {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
            if fd >= 0 {
                fds.push(fd);
            }
            (fd >= 0).then_some(fd).ok_or_else(|| err("socket"))
        };
        let (listener, client) = (sock()?, sock()?);
        if let Some(own) = names[1 - server] {
            clear_path(own)?;
            net::unix_bind(client, own).map_err(|e| format!("bind {}: {e}", String::from_utf8_lossy(own).replace('\0', "@")))?;
        }
        let path = clear_path(name)?;
        net::unix_bind(listener, name).map_err(|e| format!("bind {shown}: {e}"))?;
        // SAFETY: plain syscalls; connect reads the address unix_connect builds.
        if unsafe { libc::listen(listener, 1) } < 0 {
            return Err(err("listen"));
        }
        net::unix_connect(client, name).map_err(|e| format!("connect to {shown}: {e}"))?;
        // SAFETY: plain syscall.
        let accepted = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
        if accepted < 0 {
            return Err(err("accept"));
        }
        if let Some(p) = path {
            // SAFETY: unlinking the socket file of our listener of the moment.
            unsafe { libc::unlink(p.as_ptr()) };
        }
        // SAFETY: closing the listener of the moment.
        unsafe { libc::close(listener) };
        fds.retain(|&f| f != listener);
        Ok(if server == 0 { (accepted, client) } else { (client, accepted) })
    })();
    if r.is_err() {
        for fd in fds {
            // SAFETY: closing our own sockets.
            unsafe { libc::close(fd) };
        }
    }
    r
}

pub fn open_listener(kind: &FileKind) -> std::result::Result<i32, String> {
    let FileKind::UnixListener { ty, name, backlog, file } = kind else { return Err("not a unix listener".into()) };
    let shown = String::from_utf8_lossy(name).replace('\0', "@");
    let err = |what: &str| format!("{what} {shown}: {}", std::io::Error::last_os_error());
    let path = clear_path(name)?;
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, *ty, 0) };
    if fd < 0 {
        return Err(err("socket for"));
    }
    let r = (|| {
        net::unix_bind(fd, name).map_err(|e| format!("bind {shown}: {e}"))?;
        if let (Some(p), Some(f)) = (&path, file) {
            // SAFETY: chmod and lchown of a valid C string.
            if unsafe { libc::chmod(p.as_ptr(), f.mode) } < 0 || unsafe { libc::lchown(p.as_ptr(), f.uid, f.gid) } < 0 {
                return Err(err("set mode and owner of"));
            }
        }
        // SAFETY: plain syscall.
        if unsafe { libc::listen(fd, *backlog) } < 0 {
            return Err(err("listen on"));
        }
        Ok(fd)
    })();
    if r.is_err() {
        // SAFETY: closing our own socket.
        unsafe { libc::close(fd) };
    }
    r
}
