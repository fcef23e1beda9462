//! Checks of the special kinds of state: event files, sockets, epoll
//! watches, SysV semaphores and message queues, POSIX timers.

use std::collections::{HashMap, HashSet};

use super::*;

/// eventfd, signalfd, timerfd and epoll files (see `crate::events`).
pub(super) fn check_event_file(who: &str, kind: &FileKind) -> Result<(), ImageError> {
    let never = 1u64 << (libc::SIGKILL - 1) | 1u64 << (libc::SIGSTOP - 1);
    let clocks = [libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC, libc::CLOCK_BOOTTIME, libc::CLOCK_REALTIME_ALARM, libc::CLOCK_BOOTTIME_ALARM];
    let known = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
    match kind {
        FileKind::EventFd { count, .. } if *count == u64::MAX => {
            bail!("{who}: eventfd count {count:#x} is over the maximum")
        }
        FileKind::SignalFd { mask } if mask & never != 0 => {
            bail!("{who}: signalfd mask {mask:#x} holds SIGKILL or SIGSTOP")
        }
        FileKind::TimerFd { clock, flags, .. } if !clocks.contains(clock) || flags & !known != 0 => {
            bail!("{who}: timerfd clock {clock} or flags {flags:#o} invalid")
        }
        FileKind::Epoll { watches, .. } if watches.len() > MAX_FDS => {
            bail!("{who}: {} epoll watches (limit {MAX_FDS})", watches.len())
        }
        _ => Ok(()),
    }
}

/// An Internet socket: addresses of its family, a backlog only on a bound
/// TCP socket, a peer only on a UDP one (see `crate::sockets`).
pub(super) fn check_socket(who: &str, kind: &FileKind) -> Result<(), ImageError> {
    let FileKind::InetSocket { family, stream, local, peer, backlog, options } = kind else { return Ok(()) };
    let v6 = match *family {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        f => bail!("{who}: socket family {f} is not AF_INET or AF_INET6"),
    };
    for a in [local, peer].into_iter().flatten() {
        match a.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.is_ipv6() == v6 => {}
            _ => bail!("{who}: socket address {a:?} is not one of family {family}"),
        }
    }
    if backlog.is_some_and(|b| !(0..=65535).contains(&b)) || (backlog.is_some() && (!stream || local.is_none())) {
        bail!("{who}: backlog {backlog:?} on a socket that cannot listen with it");
    }
    if (peer.is_some() && *stream) || (options.v6only && !v6) || (options.nodelay && !stream) {
        bail!("{who}: socket options or peer that its kind does not have");
    }
    Ok(())
}

/// An established TCP connection: two addresses of its family, queues no
/// larger than socket buffers get, options TCP allows.
pub(super) fn check_tcp(who: &str, kind: &FileKind) -> Result<(), ImageError> {
    let FileKind::TcpConnection { family, local, peer, state: s, .. } = kind else { return Ok(()) };
    let v6 = *family == libc::AF_INET6;
    let addrs_ok = [local, peer].iter().all(|a| a.parse::<std::net::SocketAddr>().is_ok_and(|a| a.is_ipv6() == v6));
    if ![libc::AF_INET, libc::AF_INET6].contains(family) || !addrs_ok || local == peer {
        bail!("{who}: TCP connection {local:?} -> {peer:?} of family {family} invalid");
    }
    let len = |b: &Option<crate::model::Blob>| b.map_or(0, |b| b.len);
    let queues_ok = len(&s.send) <= MAX_TCP_QUEUE && len(&s.recv) <= MAX_TCP_QUEUE && u64::from(s.unsent) <= len(&s.send);
    if !queues_ok || s.snd_wscale > 14 || s.rcv_wscale > 14 || s.tcp_options & !7 != 0 || !(1..=65535).contains(&s.mss) {
        bail!("{who}: TCP connection state {s:?} invalid");
    }
    Ok(())
}

/// Every epoll instance belongs to a live task of the image that holds it,
/// and each watch names an fd of that task and the file behind that fd.
pub(super) fn check_epolls(t: &TreeImage, index: &HashMap<i32, usize>) -> Result<(), ImageError> {
    for f in &t.files {
        let FileKind::Epoll { owner, watches } = &f.kind else { continue };
        let who = format!("file {}", f.id);
        let Some(task) = index.get(owner).map(|&i| &t.tasks[i]) else {
            bail!("{who}: epoll owner {owner} is not a task of the image");
        };
        let fds: HashMap<i32, u32> = task.fds.iter().map(|d| (d.fd, d.file)).collect();
        if !fds.values().any(|&id| id == f.id) {
            bail!("{who}: epoll owner {owner} does not hold it");
        }
        let mut seen = HashSet::new();
        for w in watches {
            if !seen.insert(w.fd) || w.file == f.id || fds.get(&w.fd) != Some(&w.file) {
                bail!("{who}: epoll watch of fd {} (file {}) is not fd {} of task {owner}, or repeated", w.fd, w.file, w.fd);
            }
        }
    }
    Ok(())
}

/// SysV semaphore sets and message queues, within the kernel's limits
/// (`SEMMSL`, `SEMVMX`, `MSGMAX`; `IPCMNI` ids).
pub(super) fn check_ipc(t: &crate::model::TreeImage) -> Result<(), ImageError> {
    let perm_ok = |p: &crate::model::IpcPerm| p.id >= 0 && p.mode <= 0o777;
    let mut ids = HashSet::new();
    if t.sem_sets.len() > MAX_IPC || t.msg_queues.len() > MAX_IPC {
        bail!("{} semaphore sets or {} message queues (limit {MAX_IPC})", t.sem_sets.len(), t.msg_queues.len());
    }
    for s in &t.sem_sets {
        let p = s.perm;
        if !perm_ok(&p) || !ids.insert(p.id) || s.values.is_empty() || s.values.len() > 32000 || s.values.iter().any(|&v| v > 32767) {
            bail!("semaphore set {} (mode {:#o}, {} semaphores) invalid, repeated or over the limits", p.id, p.mode, s.values.len());
        }
    }
    let mut ids = HashSet::new();
    for q in &t.msg_queues {
        let p = q.perm;
        let bytes: u64 = q.messages.iter().map(|m| m.text.len() as u64).sum();
        let msgs_ok = q.messages.len() <= MAX_MESSAGES && q.messages.iter().all(|m| m.mtype > 0 && m.text.len() <= crate::sys::ipc::MSG_MAX);
        if !perm_ok(&p) || !ids.insert(p.id) || !msgs_ok || bytes > q.qbytes || q.qbytes > i32::MAX as u64 {
            bail!("message queue {} (mode {:#o}, {} messages, {bytes} of {} bytes) invalid, repeated or over the limits", p.id, p.mode, q.messages.len(), q.qbytes);
        }
    }
    Ok(())
}

pub(super) fn check_posix_timers(who: &str, task: &TaskImage) -> Result<(), ImageError> {
    use crate::timers::{CLOCKS, SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD_ID};
    if task.posix_timers.len() > MAX_POSIX_TIMERS {
        bail!("{who}: {} POSIX timers (limit {MAX_POSIX_TIMERS})", task.posix_timers.len());
    }
    let mut ids = HashSet::new();
    for t in &task.posix_timers {
        let signal_ok = match t.notify {
            SIGEV_SIGNAL => (1..=NSIG as i32).contains(&t.signal) && t.tid == 0,
            SIGEV_NONE => (0..=NSIG as i32).contains(&t.signal) && t.tid == 0,
            SIGEV_THREAD_ID => (1..=NSIG as i32).contains(&t.signal) && task.threads.iter().any(|th| th.tid == t.tid),
            _ => false,
        };
        if t.id < 0 || !ids.insert(t.id) || !CLOCKS.contains(&t.clock) || !signal_ok {
            bail!(
                "{who}: POSIX timer {} (clock {}, notify {}, signal {}, thread {}) invalid or repeated",
                t.id, t.clock, t.notify, t.signal, t.tid
            );
        }
    }
    Ok(())
}
