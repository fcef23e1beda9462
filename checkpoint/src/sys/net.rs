//! Socket queries and set-up the engine and the restore stub use on
//! Internet sockets (`crate::sockets`): integer options, addresses as
//! `std::net::SocketAddr`, `TCP_INFO`, and the network namespace a socket
//! lives in.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// `getsockopt(fd, level, name)` of an `int` option.
pub fn sockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    if unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// `setsockopt(fd, level, name, v)` of an `int` option.
pub fn set_sockopt_int(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: the kernel reads one int from `v`, which lives across the call.
    if unsafe { libc::setsockopt(fd, level, name, (&v as *const i32).cast(), size_of::<i32>() as libc::socklen_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// `bind(fd, a)` for an Internet address.
pub fn inet_bind(fd: RawFd, a: &SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr_of(a);
    // SAFETY: the kernel reads `len` bytes of a sockaddr from `ss`.
    if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `connect(fd, a)` for an Internet address.
pub fn inet_connect(fd: RawFd, a: &SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr_of(a);
    // SAFETY: the kernel reads `len` bytes of a sockaddr from `ss`.
    if unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's form of `a`, and its length.
pub fn sockaddr_of(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let s = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6.port().to_be();
            s.sin6_addr.s6_addr = v6.ip().octets();
            s.sin6_flowinfo = v6.flowinfo();
            s.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The local (`peer` false) or remote address of an Internet socket;
/// `None` for a peer when it is not connected.
pub fn sock_addr(fd: RawFd, peer: bool) -> io::Result<Option<SocketAddr>> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: the kernel writes at most `len` bytes into `ss`.
    let r = unsafe { if peer { libc::getpeername(fd, p, &mut len) } else { libc::getsockname(fd, p, &mut len) } };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if peer && e.raw_os_error() == Some(libc::ENOTCONN) { Ok(None) } else { Err(e) };
    }
    Ok(to_std(&ss))
}

/// `TCP_INFO` of a TCP socket: its state (`TCP_ESTABLISHED`=1 ...
/// `TCP_LISTEN`=10), and for a listener the connections waiting in its
/// accept queue and its backlog.
pub fn tcp_info(fd: RawFd) -> io::Result<(u8, u32, u32)> {
    // SAFETY: all-zero bytes are a valid tcp_info.
    let mut ti: libc::tcp_info = unsafe { zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `ti`.
    if unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut ti as *mut libc::tcp_info).cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ti.tcpi_state, ti.tcpi_unacked, ti.tcpi_sacked))
}

/// The inode of the network namespace socket `fd` was created in
/// (`SIOCGSKNS`).
pub fn socket_netns(fd: RawFd) -> io::Result<u64> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd.
    let ns = unsafe { libc::ioctl(fd, SIOCGSKNS) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ns` is a new fd we own.
    let ns = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) };
    Ok(nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&ns))?.st_ino)
}

/// The name Unix socket `fd` is bound to: a path, or an abstract name
/// starting with a 0 byte; `None` for none (socketpair(2) ends).
pub fn unix_name(fd: RawFd) -> io::Result<Option<Vec<u8>>> {
    // SAFETY: all-zero bytes are a valid sockaddr_un.
    let mut sa: libc::sockaddr_un = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `sa`.
    if unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_un).cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (len as usize).saturating_sub(size_of::<libc::sa_family_t>()).min(sa.sun_path.len());
    let mut name: Vec<u8> = sa.sun_path[..n].iter().map(|&c| c as u8).collect();
    if name.first().is_some_and(|&c| c != 0) {
        // A path: the kernel may count its terminating NUL.
        while name.last() == Some(&0) {
            name.pop();
        }
    }
    Ok((!name.is_empty()).then_some(name))
}

/// Binds Unix socket `fd` to `name` (as [`unix_name`] gives it).
pub fn unix_bind(fd: RawFd, name: &[u8]) -> io::Result<()> {
    let (sa, len) = unix_addr(name)?;
    // SAFETY: the kernel reads `len` bytes of `sa`.
    if unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_un).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects Unix socket `fd` to `name` (a path, or an abstract name
/// starting with a 0 byte).
pub fn unix_connect(fd: RawFd, name: &[u8]) -> io::Result<()> {
    let (sa, len) = unix_addr(name)?;
    // SAFETY: the kernel reads `len` bytes of `sa`.
    if unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unix_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: all-zero bytes are a valid sockaddr_un.
    let mut sa: libc::sockaddr_un = unsafe { zeroed() };
    if name.is_empty() || name.len() >= sa.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &c) in sa.sun_path.iter_mut().zip(name) {
        *d = c as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + name.len() + usize::from(name[0] != 0);
    Ok((sa, len as libc::socklen_t))
}

/// The bytes queued for reading on stream socket `fd`, left in place
/// (`MSG_PEEK`); `None` if file descriptors travel with them (they cannot
/// be saved; those the peek installed here are closed again).
pub fn peek_stream(fd: RawFd, len: usize) -> io::Result<Option<Vec<u8>>> {
    let mut data = vec![0u8; len];
    let mut ctl = [0u64; 64];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: len };
    // SAFETY: all-zero bytes are a valid msghdr; the pointers set below
    // stay valid through the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 64]>();
    // SAFETY: the kernel writes into `data` and `ctl` within the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut rights = false;
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control buffer the kernel
    // filled, within `msg.msg_controllen`.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` points to a complete cmsghdr inside `ctl`.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            rights = true;
            // SAFETY: an SCM_RIGHTS payload is an array of ints, fds now ours.
            let p = unsafe { libc::CMSG_DATA(c) }.cast::<libc::c_int>();
            let count = (h.cmsg_len as usize - (p as usize - c as usize)) / size_of::<libc::c_int>();
            for i in 0..count {
                // SAFETY: closing fds the peek installed in this process.
                unsafe { libc::close(p.add(i).read_unaligned()) };
            }
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    if rights || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Ok(None);
    }
    data.truncate(n as usize);
    Ok(Some(data))
}

/// What `sock_diag` says of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixDiag {
    /// Inode of the connected peer, 0 when there is none.
    pub peer: u32,
    /// `SHUT_RD` (1) and `SHUT_WR` (2) bits applied to it.
    pub shutdown: u8,
    /// Inode of the file a path-bound socket made, 0 for none.
    pub vfs_ino: u32,
    /// For a listener: connections waiting to be accepted, and the backlog.
    pub rqueue: u32,
    pub wqueue: u32,
}

const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// A `NETLINK_SOCK_DIAG` socket in the network namespace `netns` (Unix
/// sockets are listed per namespace): made on a thread that joins it, so
/// the engine's own namespace does not change.
pub fn sock_diag_socket_in(netns: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    let ns = netns.try_clone_to_owned()?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    })
    .join()
    .map_err(|_| io::Error::other("sock_diag thread panicked"))?
}

/// Asks `sock_diag` (socket `nl`, see [`sock_diag_socket_in`]) about the
/// Unix socket with inode `ino`.
pub fn unix_diag(nl: RawFd, ino: u32) -> io::Result<UnixDiag> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    // UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN
    const SHOW: u32 = 0x2 | 0x4 | 0x10;
    // struct nlmsghdr + struct unix_diag_req
    let mut req = [0u8; 16 + 24];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req[24..28].copy_from_slice(&ino.to_ne_bytes());
    req[28..32].copy_from_slice(&SHOW.to_ne_bytes());
    req[32..40].copy_from_slice(&u64::MAX.to_ne_bytes()); // no cookie
    // SAFETY: the kernel reads `req.len()` bytes from `req`.
    if unsafe { libc::send(nl, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 4096];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::recv(nl, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_unix_diag(&buf[..n as usize], ino)
}

fn parse_unix_diag(b: &[u8], ino: u32) -> io::Result<UnixDiag> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag answer");
    let u16_at = |i: usize| b.get(i..i + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]));
    let u32_at = |i: usize| b.get(i..i + 4).map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]));
    let len = (u32_at(0).ok_or_else(bad)? as usize).min(b.len());
    match u16_at(4).ok_or_else(bad)? {
        t if t == libc::NLMSG_ERROR as u16 => {
            let e = u32_at(16).ok_or_else(bad)? as i32;
            return Err(io::Error::from_raw_os_error(-e));
        }
        20 => {}
        t => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag answered type {t}"))),
    }
    // struct unix_diag_msg: family, type, state, pad, ino, cookie[2]
    if u32_at(20).ok_or_else(bad)? != ino {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "sock_diag answered about another socket"));
    }
    let mut d = UnixDiag { peer: 0, shutdown: 0, vfs_ino: 0, rqueue: 0, wqueue: 0 };
    let mut at = 16 + 16;
    while at + 4 <= len {
        let (alen, ty) = (u16_at(at).ok_or_else(bad)? as usize, u16_at(at + 2).ok_or_else(bad)?);
        if alen < 4 {
            break;
        }
        match ty {
            UNIX_DIAG_PEER => d.peer = u32_at(at + 4).ok_or_else(bad)?,
            UNIX_DIAG_SHUTDOWN => d.shutdown = *b.get(at + 4).ok_or_else(bad)?,
            UNIX_DIAG_VFS => d.vfs_ino = u32_at(at + 4).ok_or_else(bad)?,
            UNIX_DIAG_RQLEN => (d.rqueue, d.wqueue) = (u32_at(at + 4).ok_or_else(bad)?, u32_at(at + 8).ok_or_else(bad)?),
            _ => {}
        }
        at += (alen + 3) & !3;
    }
    Ok(d)
}

/// The state of an established TCP connection that `TCP_INFO` gives:
/// `tcpi_options` (`TCPI_OPT_*`), send and receive window scales, and the
/// MSS the kernel sends with.
pub fn tcp_info_options(fd: RawFd) -> io::Result<(u8, u8, u8, u32)> {
    // SAFETY: all-zero bytes are a valid tcp_info.
    let mut ti: libc::tcp_info = unsafe { zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `ti`.
    if unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut ti as *mut libc::tcp_info).cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ti.tcpi_options, ti.tcpi_snd_rcv_wscale & 0xf, ti.tcpi_snd_rcv_wscale >> 4, ti.tcpi_snd_mss))
}

/// `TCP_REPAIR_WINDOW`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
pub fn tcp_repair_window(fd: RawFd) -> io::Result<[u32; 5]> {
    let mut w = [0u32; 5];
    let mut len = size_of::<[u32; 5]>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `w`.
    if unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW, w.as_mut_ptr().cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(w)
}

pub fn set_tcp_repair_window(fd: RawFd, w: &[u32; 5]) -> io::Result<()> {
    // SAFETY: the kernel reads 20 bytes from `w`.
    if unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_WINDOW, w.as_ptr().cast(), size_of::<[u32; 5]>() as libc::socklen_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TCP_REPAIR_OPTIONS`: (option code, value) pairs, `struct tcp_repair_opt`.
pub fn set_tcp_repair_options(fd: RawFd, opts: &[(u32, u32)]) -> io::Result<()> {
    let flat: Vec<u32> = opts.iter().flat_map(|&(c, v)| [c, v]).collect();
    // SAFETY: the kernel reads `flat.len() * 4` bytes from `flat`.
    if unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_OPTIONS, flat.as_ptr().cast(), (flat.len() * 4) as libc::socklen_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An int-valued socket ioctl (`SIOCINQ`, `SIOCOUTQ`, `SIOCOUTQNSD`).
pub fn ioctl_int(fd: RawFd, req: libc::c_ulong) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int.
    if unsafe { libc::ioctl(fd, req as _, &mut v) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of up to `len` bytes.
pub fn peek(fd: RawFd, len: usize) -> io::Result<Vec<u8>> {
    let mut data = vec![0u8; len];
    // SAFETY: the kernel writes at most `len` bytes into `data`.
    let n = unsafe { libc::recv(fd, data.as_mut_ptr().cast(), len, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    data.truncate(n as usize);
    Ok(data)
}

/// `send` of all of `data` (a TCP socket in repair mode takes it into the
/// queue chosen with `TCP_REPAIR_QUEUE`).
pub fn send_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: the kernel reads at most `data.len()` bytes from `data`.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_and_options_of_live_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let local = sock_addr(fd, false).unwrap().unwrap();
        assert_eq!(local, l.local_addr().unwrap());
        assert_eq!(sock_addr(fd, true).unwrap(), None);
        assert_eq!(sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap(), 1);
        assert_eq!(tcp_info(fd).unwrap().0, 10);
        let (ss, len) = sockaddr_of(&local);
        assert_eq!(to_std(&ss), Some(local));
        assert_eq!(len as usize, size_of::<libc::sockaddr_in>());
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(to_std(&sockaddr_of(&v6).0), Some(v6));
        let own = nix::sys::stat::stat("/proc/self/ns/net").unwrap().st_ino;
        assert_eq!(socket_netns(fd).unwrap(), own);
    }

    #[test]
    fn sock_diag_names_the_peer_of_a_socketpair() {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |s: &std::os::unix::net::UnixStream| std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap().ino() as u32;
        let ns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let nl = sock_diag_socket_in(std::os::fd::AsFd::as_fd(&ns)).unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        // SHUT_WR on b: b stops sending (2), so a stops receiving (1).
        let (da, db) = (unix_diag(nl.as_raw_fd(), ino(&a)).unwrap(), unix_diag(nl.as_raw_fd(), ino(&b)).unwrap());
        assert_eq!((da.peer, da.shutdown, da.vfs_ino), (ino(&b), 1, 0));
        assert_eq!((db.peer, db.shutdown, db.vfs_ino), (ino(&a), 2, 0));
        let dir = std::env::temp_dir().join(format!("stasis-diag-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let l = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let _c = std::os::unix::net::UnixStream::connect(&dir).unwrap();
        let dl = unix_diag(nl.as_raw_fd(), std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap().ino() as u32).unwrap();
        // std listens with the largest backlog the kernel allows (somaxconn).
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
        assert_eq!((dl.peer, dl.vfs_ino as u64, dl.rqueue, dl.wqueue), (0, std::fs::metadata(&dir).unwrap().ino(), 1, somaxconn));
        assert_eq!(unix_name(l.as_raw_fd()).unwrap(), Some(dir.as_os_str().as_encoded_bytes().to_vec()));
        assert_eq!(unix_name(a.as_raw_fd()).unwrap(), None);
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(unix_diag(nl.as_raw_fd(), 1).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }
}
