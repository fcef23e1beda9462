//! Unix socket pairs: connected Unix sockets without a name whose two ends
//! are both held in the tree (what socketpair(2) makes; event loops such as
//! Python's asyncio and nginx's channels use them).
//!
//! The dump asks `sock_diag` (in the tree's network namespace) for each
//! end's peer and shutdown state, and reads the bytes queued on a stream
//! end with `MSG_PEEK`, leaving them in place. Both ends of a pair carry the
//! pair's id (the lower inode) and their end number. Refused, with the
//! task and fd: a named socket (bound to a path or an abstract name, or
//! listening), an unconnected one, one whose peer is outside the tree,
//! file descriptors in flight, and queued messages on datagram or
//! seqpacket ends.
//!
//! The restore stub makes each pair with socketpair(2), writes the queued
//! bytes of an end into its peer (so they wait on that end again), then
//! shuts down the writing side of the ends that were shut down (the peer's
//! reading side follows, as it did).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::copier::{Copier, Source};
use crate::error::{Error, Result};
use crate::image::PagesWriter;
use crate::model::{FileImage, FileKind};
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
    if net::unix_named(s).map_err(io("read the name"))? {
        return Err(unsupported("with a name"));
    }
    let ino = nix::sys::stat::fstat(s).map_err(|e| io("stat")(e.into()))?.st_ino as u32;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(io("open the network namespace"))?;
    let nl = net::sock_diag_socket_in(ns.as_fd()).map_err(io("open sock_diag"))?;
    let diag = net::unix_diag(nl.as_raw_fd(), ino).map_err(io("ask sock_diag about"))?;
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
    Ok(FileKind::UnixPair { ty, pair, end: u8::from(ino != pair as u32), shutdown: diag.shutdown, data })
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

/// A one-line description for `stasis inspect`.
pub fn describe(kind: &FileKind) -> Option<String> {
    let FileKind::UnixPair { ty, pair, end, shutdown, data } = kind else { return None };
    let ty = match *ty {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "?",
    };
    let queued = data.map(|d| format!(", {} bytes queued", d.len)).unwrap_or_default();
    let shut = if *shutdown != 0 { format!(", shutdown {shutdown}") } else { String::new() };
    Some(format!("unix {ty} socket pair {pair} end {end}{queued}{shut}"))
}
