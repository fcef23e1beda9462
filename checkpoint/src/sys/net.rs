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
}
