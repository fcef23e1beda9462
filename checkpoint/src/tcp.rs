//! Established TCP connections whose two ends are both in the tree: a
//! process talking to another process of the same container over
//! loopback (an application and its local cache or database, a supervisor
//! and its workers). A connection to a peer outside the tree is refused:
//! the peer would see the original socket go away.
//!
//! **Dump** (through a `pidfd_getfd` copy, `crate::sockets`): the socket
//! is put in repair mode (`TCP_REPAIR`), which lets the engine read its
//! sequence numbers (`TCP_QUEUE_SEQ`), both queues (`recv` with `MSG_PEEK`
//! on the queue `TCP_REPAIR_QUEUE` selects: nothing is consumed), its
//! window (`TCP_REPAIR_WINDOW`) and timestamp clock. `TCP_INFO` gives the
//! options negotiated at the handshake. A dump that kills the tree keeps
//! the sockets in repair mode until then ([`Repaired`]), so that they close
//! silently; otherwise (or if the dump fails) they leave it again (the
//! kernel then sends a window probe, harmless on a live connection), with
//! `SO_REUSEADDR` put back, which leaving repair mode clears.
//!
//! **Restore** (in the restore stub, in the new network namespace): a new
//! socket in repair mode is bound to the old local address (repair mode
//! binds even where a listener holds the port), given its sequence
//! numbers, "connected" to the old peer without a handshake, given the
//! negotiated options and timestamp clock, its receive queue and the sent
//! part of its send queue, and its window. Once every connection of the
//! tree exists ([`finish`]), repair mode ends (its window probe must find
//! the peer there, or the peer's port would answer with a reset) and the
//! part never sent is sent.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::copier::{Copier, Source};
use crate::image::PagesWriter;
use crate::model::{Blob, FileKind, FileImage, SocketOptions, TcpState};
use crate::sys::net;

const TCP_REPAIR_ON: i32 = 1;
const TCP_REPAIR_OFF: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const SIOCINQ: libc::c_ulong = 0x541b;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894b;

/// Connections a dump that kills the tree leaves in repair mode until then:
/// closed in repair mode, a connection ends silently (no FIN, no reset, no
/// TIME_WAIT socket left holding its port). Dropped before the kill (the
/// dump failed), they leave repair mode again and the tree goes on.
#[derive(Default)]
pub struct Repaired {
    keep: bool,
    socks: Vec<(OwnedFd, bool)>,
}

impl Repaired {
    /// `keep`: the dump kills the tree (else connections leave repair mode
    /// as soon as they are read).
    pub fn new(keep: bool) -> Self {
        Repaired { keep, socks: Vec::new() }
    }

    /// After the kill: the engine's copies are the last references; closed
    /// in repair mode, the connections end without a word to the network.
    pub fn close_silently(mut self) {
        self.socks.clear();
    }
}

impl Drop for Repaired {
    fn drop(&mut self) {
        for (s, reuseaddr) in self.socks.drain(..) {
            let _ = leave_repair(s.as_raw_fd(), reuseaddr);
        }
    }
}

/// Out of repair mode, with `SO_REUSEADDR` as it was (leaving repair mode
/// clears it). Best effort: used on the way out of a failed dump too.
fn leave_repair(s: RawFd, reuseaddr: bool) -> std::io::Result<()> {
    net::set_sockopt_int(s, libc::IPPROTO_TCP, libc::TCP_REPAIR, TCP_REPAIR_OFF)?;
    net::set_sockopt_int(s, libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr as i32)
}

/// Reads the connection state of established TCP socket `dup` (a copy of
/// the task's), and hands it to `repaired`, which keeps it in repair mode
/// or takes it out again.
pub fn dump(dup: OwnedFd, reuseaddr: bool, w: &PagesWriter, copier: &mut Copier, repaired: &mut Repaired) -> std::io::Result<TcpState> {
    let s = dup.as_raw_fd();
    let int = |name| net::sockopt_int(s, libc::IPPROTO_TCP, name);
    let set = |name, v| net::set_sockopt_int(s, libc::IPPROTO_TCP, name, v);
    set(libc::TCP_REPAIR, TCP_REPAIR_ON)?;
    let read = (|| -> std::io::Result<(TcpState, Vec<u8>, Vec<u8>)> {
        let outq = net::ioctl_int(s, SIOCOUTQ)? as usize;
        let unsent = net::ioctl_int(s, SIOCOUTQNSD)? as u32;
        let inq = net::ioctl_int(s, SIOCINQ)? as usize;
        set(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        let snd_seq = int(libc::TCP_QUEUE_SEQ)? as u32;
        let send = if outq > 0 { net::peek(s, outq)? } else { Vec::new() };
        set(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        let rcv_seq = int(libc::TCP_QUEUE_SEQ)? as u32;
        let recv = if inq > 0 { net::peek(s, inq)? } else { Vec::new() };
        if send.len() != outq || recv.len() != inq {
            return Err(std::io::Error::other(format!(
                "read {} of {outq} queued bytes to send and {} of {inq} received: not in one piece",
                send.len(),
                recv.len()
            )));
        }
        let (tcp_options, snd_wscale, rcv_wscale, mss) = net::tcp_info_options(s)?;
        let state = TcpState {
            snd_seq,
            rcv_seq,
            send: None,
            unsent,
            recv: None,
            tcp_options,
            snd_wscale,
            rcv_wscale,
            mss,
            timestamp: int(libc::TCP_TIMESTAMP)? as u32,
            window: net::tcp_repair_window(s)?,
        };
        Ok((state, send, recv))
    })();
    if read.is_ok() && repaired.keep {
        repaired.socks.push((dup, reuseaddr));
    } else {
        let left = leave_repair(s, reuseaddr);
        read.as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
        left?;
    }
    let (mut state, send, recv) = read?;
    let mut blob = |b: Vec<u8>| -> Option<Blob> {
        let n = b.len() as u64;
        (n > 0).then(|| copier.add(w, Source::Bytes(b), n))
    };
    state.send = blob(send);
    state.recv = blob(recv);
    Ok(state)
}

/// After all tasks: every connection's peer is a connection of the tree
/// (its addresses mirrored). `who` gives a (vpid, fd) holding each file.
pub fn check_peers(files: &[FileImage], who: impl Fn(usize) -> (i32, i32)) -> crate::error::Result<()> {
    let ends: std::collections::HashSet<(&str, &str)> = files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::TcpConnection { local, peer, .. } => Some((local.as_str(), peer.as_str())),
            _ => None,
        })
        .collect();
    for (i, f) in files.iter().enumerate() {
        if let FileKind::TcpConnection { local, peer, .. } = &f.kind {
            if !ends.contains(&(peer.as_str(), local.as_str())) {
                let (pid, fd) = who(i);
                return Err(crate::error::Error::Unsupported {
                    pid,
                    what: format!("fd {fd} (TCP connection {local} -> {peer}: the peer is not in the checkpoint; only connections inside it are saved)"),
                });
            }
        }
    }
    Ok(())
}

/// A one-line description for `stasis inspect`.
pub fn describe(kind: &FileKind) -> Option<String> {
    let FileKind::TcpConnection { local, peer, state, .. } = kind else { return None };
    let len = |b: &Option<Blob>| b.map_or(0, |b| b.len);
    Some(format!(
        "tcp connection {local} -> {peer} ({} bytes to send, {} not sent yet; {} received)",
        len(&state.send),
        state.unsent,
        len(&state.recv)
    ))
}

// Restore side: runs in the restore stub, which reports errors as strings.

type R<T> = std::result::Result<T, String>;

/// Makes the connection again (see the module doc); `bytes` gives a blob's
/// contents.
pub fn open<'a>(kind: &FileKind, bytes: impl Fn(&Blob) -> R<&'a [u8]>) -> R<i32> {
    let FileKind::TcpConnection { family, local, peer, options, state } = kind else {
        return Err("not a TCP connection".into());
    };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(*family, libc::SOCK_STREAM, libc::IPPROTO_TCP) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let r = set_up(fd, local, peer, options, state, bytes);
    if r.is_err() {
        // SAFETY: closing our own socket.
        unsafe { libc::close(fd) };
    }
    r.map(|_| fd).map_err(|e| format!("TCP connection {local} -> {peer}: {e}"))
}

fn set_up<'a>(fd: RawFd, local: &str, peer: &str, o: &SocketOptions, st: &TcpState, bytes: impl Fn(&Blob) -> R<&'a [u8]>) -> R<()> {
    let tcp = |name, v: i32, what: &str| net::set_sockopt_int(fd, libc::IPPROTO_TCP, name, v).map_err(|e| format!("set {what}: {e}"));
    let sock = |name, v: i32, what: &str| net::set_sockopt_int(fd, libc::SOL_SOCKET, name, v).map_err(|e| format!("set {what}: {e}"));
    let send = st.send.as_ref().map(&bytes).transpose()?.unwrap_or_default();
    let recv = st.recv.as_ref().map(&bytes).transpose()?.unwrap_or_default();
    let unsent = (st.unsent as usize).min(send.len());
    tcp(libc::TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR")?;
    if *o != SocketOptions::default() {
        sock(libc::SO_REUSEPORT, o.reuseport as i32, "SO_REUSEPORT")?;
        sock(libc::SO_KEEPALIVE, o.keepalive as i32, "SO_KEEPALIVE")?;
        if o.v6only {
            net::set_sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).map_err(|e| format!("set IPV6_V6ONLY: {e}"))?;
        }
    }
    net::inet_bind(fd, &crate::sockets::parse(local)?).map_err(|e| format!("bind: {e}"))?;
    tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    tcp(libc::TCP_QUEUE_SEQ, st.snd_seq.wrapping_sub(send.len() as u32) as i32, "the send sequence")?;
    tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    tcp(libc::TCP_QUEUE_SEQ, st.rcv_seq.wrapping_sub(recv.len() as u32) as i32, "the receive sequence")?;
    // In repair mode connect sends nothing.
    net::inet_connect(fd, &crate::sockets::parse(peer)?).map_err(|e| format!("connect in repair mode: {e}"))?;
    let mut opts = vec![(TCPOPT_MAXSEG, st.mss)];
    if st.tcp_options & TCPI_OPT_WSCALE != 0 {
        opts.push((TCPOPT_WINDOW, u32::from(st.snd_wscale) | u32::from(st.rcv_wscale) << 16));
    }
    if st.tcp_options & TCPI_OPT_SACK != 0 {
        opts.push((TCPOPT_SACK_PERM, 0));
    }
    if st.tcp_options & TCPI_OPT_TIMESTAMPS != 0 {
        opts.push((TCPOPT_TIMESTAMP, 0));
    }
    net::set_tcp_repair_options(fd, &opts).map_err(|e| format!("set TCP_REPAIR_OPTIONS: {e}"))?;
    tcp(libc::TCP_TIMESTAMP, st.timestamp as i32, "TCP_TIMESTAMP")?;
    // Room for the queues where the default buffers here are too small.
    for (name, opt, need) in [(libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, recv.len()), (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, send.len())] {
        let have = net::sockopt_int(fd, libc::SOL_SOCKET, name).map_err(|e| format!("read a buffer size: {e}"))? as usize;
        if need > 0 && have < 2 * need {
            sock(opt, (2 * need) as i32, "a buffer size")?;
        }
    }
    if !recv.is_empty() {
        tcp(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
        net::send_all(fd, recv).map_err(|e| format!("fill the receive queue: {e}"))?;
    }
    let sent = &send[..send.len() - unsent];
    if !sent.is_empty() {
        tcp(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
        net::send_all(fd, sent).map_err(|e| format!("fill the send queue: {e}"))?;
    }
    net::set_tcp_repair_window(fd, &st.window).map_err(|e| format!("set TCP_REPAIR_WINDOW: {e}"))
}

/// Takes connection `fd`, made by [`open`], out of repair mode once every
/// connection of the tree exists, and sends what had not been sent yet.
pub fn finish<'a>(fd: RawFd, kind: &FileKind, bytes: impl Fn(&Blob) -> R<&'a [u8]>) -> R<()> {
    let FileKind::TcpConnection { local, peer, options: o, state: st, .. } = kind else {
        return Err("not a TCP connection".into());
    };
    let fail = |what: &str, e: std::io::Error| format!("TCP connection {local} -> {peer}: {what}: {e}");
    net::set_sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, TCP_REPAIR_OFF).map_err(|e| fail("leave repair mode", e))?;
    let send = st.send.as_ref().map(&bytes).transpose()?.unwrap_or_default();
    let unsent = (st.unsent as usize).min(send.len());
    if unsent > 0 {
        net::send_all(fd, &send[send.len() - unsent..]).map_err(|e| fail("send what was not sent yet", e))?;
    }
    net::set_sockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, o.reuseaddr as i32).map_err(|e| fail("set SO_REUSEADDR", e))?;
    net::set_sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, o.nodelay as i32).map_err(|e| fail("set TCP_NODELAY", e))
}
