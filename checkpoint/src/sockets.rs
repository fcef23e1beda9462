//! Internet sockets without connection state: TCP sockets that listen, are
//! bound or are fresh, and UDP sockets (bound, and connected to a peer if
//! they were), IPv4 and IPv6. That is what an idle server holds.
//!
//! The dump takes a duplicate of the socket with `pidfd_getfd` and reads
//! it with `getsockname`, `getpeername`, `getsockopt` and `TCP_INFO`;
//! established connections go to [`crate::tcp`]. It refuses, naming the
//! task, fd and address (the tree keeps running): TCP sockets in any state
//! but listening, closed or established, a listener with
//! connections waiting to be accepted, a UDP socket with queued datagrams,
//! a socket bound to a device, one made in another network namespace than
//! its task's, and every other family (netlink, packet...) or type. Unix
//! sockets go to [`crate::unix`].
//!
//! The restore stub makes the socket again in the restored tree's network
//! namespace: the same options (`SO_REUSEADDR`, `SO_REUSEPORT`,
//! `SO_KEEPALIVE`, `SO_BROADCAST`, `IPV6_V6ONLY`, `TCP_NODELAY`), bound to
//! the same address with `SO_REUSEADDR` on for the bind (as CRIU does:
//! connections of the old process may linger in TIME_WAIT), `listen` with
//! the same backlog, `connect` for a UDP peer. An address the new namespace
//! lacks, or a port in use there, fails the restore with the address.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use crate::copier::Copier;
use crate::error::{Error, Result};
use crate::image::PagesWriter;
use crate::model::{FileKind, SocketOptions};
use crate::sys::{self, net};

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

/// The kind of socket fd `fd` of task `pid` (`link` = "socket:[ino]").
pub fn dump(pid: i32, vpid: i32, fd: i32, link: &str, w: &PagesWriter, copier: &mut Copier, repaired: &mut crate::tcp::Repaired) -> Result<FileKind> {
    let unsupported = |what: String| Error::Unsupported { pid: vpid, what: format!("fd {fd} ({link}, {what})") };
    let io = |what: &str| {
        let what = format!("{what} of socket fd {fd} of task {vpid}");
        move |e: std::io::Error| Error::Io { context: what, cause: e }
    };
    let dup = sys::take_fd(pid, fd).map_err(io("take a copy"))?;
    let s = dup.as_raw_fd();
    let int = |level, name, what: &str| net::sockopt_int(s, level, name).map_err(io(what));
    let family = int(libc::SOL_SOCKET, libc::SO_DOMAIN, "read the family")?;
    if family == libc::AF_UNIX {
        return crate::unix::dump(pid, vpid, fd, link, &dup, w, copier);
    }
    if family != libc::AF_INET && family != libc::AF_INET6 {
        let name = match family {
            libc::AF_NETLINK => "netlink socket".to_string(),
            libc::AF_PACKET => "packet socket".to_string(),
            f => format!("socket of family {f}"),
        };
        return Err(unsupported(name));
    }
    let ty = int(libc::SOL_SOCKET, libc::SO_TYPE, "read the type")?;
    let protocol = int(libc::SOL_SOCKET, libc::SO_PROTOCOL, "read the protocol")?;
    let stream = match (ty, protocol) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => true,
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => false,
        _ => return Err(unsupported(format!("socket of type {ty}, protocol {protocol}"))),
    };
    let own_ns = nix::sys::stat::stat(format!("/proc/{pid}/ns/net").as_str()).map_err(|e| io("stat the network namespace")(e.into()))?.st_ino;
    if net::socket_netns(s).map_err(io("read the network namespace"))? != own_ns {
        return Err(unsupported("made in another network namespace than its task's".into()));
    }
    if int(libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, "read the bound device")? != 0 {
        return Err(unsupported("bound to a device".into()));
    }
    let local = net::sock_addr(s, false).map_err(io("read the address"))?.filter(|a| a.port() != 0);
    let peer = net::sock_addr(s, true).map_err(io("read the peer"))?;
    let at = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "unbound".into());
    let mut backlog = None;
    let mut established = false;
    if stream {
        let (state, waiting, max) = net::tcp_info(s).map_err(io("read TCP_INFO"))?;
        match state {
            TCP_LISTEN if waiting > 0 => {
                return Err(unsupported(format!("TCP listener {} with {waiting} connections not yet accepted", at(local))));
            }
            TCP_LISTEN => backlog = Some(max as i32),
            TCP_CLOSE => {}
            TCP_ESTABLISHED => established = true,
            st => return Err(unsupported(format!("TCP socket {} in state {st}: connections cannot be saved", at(local)))),
        }
    } else {
        let queued = sys::fionread(std::os::fd::AsFd::as_fd(&dup)).map_err(io("read the queue"))?;
        if queued > 0 {
            return Err(unsupported(format!("UDP socket {} with queued datagrams", at(local))));
        }
    }
    let flag = |level, name, what| int(level, name, what).map(|v| v != 0);
    let options = SocketOptions {
        reuseaddr: flag(libc::SOL_SOCKET, libc::SO_REUSEADDR, "read SO_REUSEADDR")?,
        reuseport: flag(libc::SOL_SOCKET, libc::SO_REUSEPORT, "read SO_REUSEPORT")?,
        keepalive: flag(libc::SOL_SOCKET, libc::SO_KEEPALIVE, "read SO_KEEPALIVE")?,
        broadcast: flag(libc::SOL_SOCKET, libc::SO_BROADCAST, "read SO_BROADCAST")?,
        v6only: family == libc::AF_INET6 && flag(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, "read IPV6_V6ONLY")?,
        nodelay: stream && flag(libc::IPPROTO_TCP, libc::TCP_NODELAY, "read TCP_NODELAY")?,
    };
    if established {
        let (Some(l), Some(p)) = (local, peer) else { return Err(unsupported("TCP connection without addresses".into())) };
        let state = crate::tcp::dump(dup, options.reuseaddr, w, copier, repaired)
            .map_err(|e| unsupported(format!("TCP connection {l} -> {p}, whose state cannot be read: {e}")))?;
        return Ok(FileKind::TcpConnection { family, local: l.to_string(), peer: p.to_string(), options, state });
    }
    Ok(FileKind::InetSocket {
        family,
        stream,
        local: local.map(|a| a.to_string()),
        peer: if stream { None } else { peer.map(|a| a.to_string()) },
        backlog,
        options,
    })
}

/// A one-line description for `stasis inspect`.
pub fn describe(kind: &FileKind) -> Option<String> {
    let FileKind::InetSocket { stream, local, peer, backlog, .. } = kind else { return None };
    let proto = if *stream { "tcp" } else { "udp" };
    let local = local.as_deref().unwrap_or("unbound");
    Some(match (backlog, peer) {
        (Some(b), _) => format!("{proto} socket listening on {local} (backlog {b})"),
        (None, Some(p)) => format!("{proto} socket {local} -> {p}"),
        (None, None) => format!("{proto} socket {local}"),
    })
}

// Restore side: runs in the restore stub, which reports errors as strings.

type R<T> = std::result::Result<T, String>;

pub(crate) fn parse(a: &str) -> R<SocketAddr> {
    a.parse().map_err(|_| format!("bad socket address {a:?}"))
}

/// Makes an Internet socket again (see the module doc).
pub fn open(kind: &FileKind) -> R<i32> {
    let FileKind::InetSocket { family, stream, local, peer, backlog, options } = kind else {
        return Err("not an Internet socket".into());
    };
    let (ty, proto) = if *stream { (libc::SOCK_STREAM, libc::IPPROTO_TCP) } else { (libc::SOCK_DGRAM, libc::IPPROTO_UDP) };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(*family, ty, proto) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let r = set_up(fd, *family, *stream, local.as_deref(), peer.as_deref(), *backlog, options);
    if r.is_err() {
        // SAFETY: closing our own socket.
        unsafe { libc::close(fd) };
    }
    r.map(|_| fd)
}

fn set_up(fd: i32, family: i32, stream: bool, local: Option<&str>, peer: Option<&str>, backlog: Option<i32>, o: &SocketOptions) -> R<()> {
    let set = |level, name, v: bool, what: &str| net::set_sockopt_int(fd, level, name, v as i32).map_err(|e| format!("set {what}: {e}"));
    set(libc::SOL_SOCKET, libc::SO_REUSEPORT, o.reuseport, "SO_REUSEPORT")?;
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, o.keepalive, "SO_KEEPALIVE")?;
    set(libc::SOL_SOCKET, libc::SO_BROADCAST, o.broadcast, "SO_BROADCAST")?;
    if family == libc::AF_INET6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, o.v6only, "IPV6_V6ONLY")?;
    }
    if stream {
        set(libc::IPPROTO_TCP, libc::TCP_NODELAY, o.nodelay, "TCP_NODELAY")?;
    }
    if let Some(a) = local {
        let addr = parse(a)?;
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR, true, "SO_REUSEADDR")?;
        net::inet_bind(fd, &addr).map_err(|e| format!("bind {a}: {e}"))?;
    }
    if let Some(b) = backlog {
        // SAFETY: plain syscall.
        if unsafe { libc::listen(fd, b) } < 0 {
            return Err(format!("listen on {}: {}", local.unwrap_or("an unbound socket"), std::io::Error::last_os_error()));
        }
    }
    if let Some(p) = peer {
        net::inet_connect(fd, &parse(p)?).map_err(|e| format!("connect to {p}: {e}"))?;
    }
    // Last: listen checks the port again, with the option as it is then.
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR, o.reuseaddr, "SO_REUSEADDR")
}
