//! Event descriptors: eventfd, signalfd, timerfd and epoll, dumped from
//! their `/proc/PID/fdinfo` and recreated by the restore stub.
//!
//! - **eventfd**: the counter and the semaphore flag; restored by writing
//!   the counter into a new eventfd (`eventfd2` only takes 32 bits).
//! - **signalfd**: the signal mask. Queued signals belong to the task and
//!   its thread group, which the engine restores separately.
//! - **timerfd**: clock, time left, period, settime flags, and expirations
//!   not yet read (`TFD_IOC_SET_TICKS`). Time left counts from the
//!   restore, also for `TFD_TIMER_ABSTIME` timers, which are re-armed at
//!   "now + time left" on their own clock, keeping their flags (so
//!   `TFD_TIMER_CANCEL_ON_SET` survives). The kernel counts the missed
//!   periods of an expired periodic timer only when it is read, so such a
//!   timer comes back with the one expiration fdinfo shows, next due a
//!   period after the restore.
//! - **epoll**: every watch (fd number, events, user data). A watch is
//!   keyed by the watched file *and* the fd number the application used,
//!   so the stub registers them inside the task that owns the epoll, after
//!   its fds are installed. The dump checks (`kcmp`) that each watched fd
//!   number of that task still refers to the watched file; a watch on a
//!   file the task has closed since, or two watches under one fd number,
//!   fail the checkpoint (the tree keeps running).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::{EpollWatch, FileImage, FileKind, TaskImage};

/// The kind of an `anon_inode:[...]` fd of task `pid`, from its fdinfo
/// `text`. Anything but the four kinds here is unsupported.
pub fn dump(pid: i32, vpid: i32, fd: i32, name: &str, text: &str) -> Result<FileKind> {
    let unsupported = |what: String| Error::Unsupported { pid: vpid, what: format!("fd {fd} ({what})") };
    if !matches!(name, "[eventfd]" | "[signalfd]" | "[timerfd]" | "[eventpoll]") {
        return Err(unsupported(name.to_string()));
    }
    let kind = parse(name, text, vpid).map_err(|why| unsupported(format!("{name}: {why}")))?;
    // A periodic timer past its expiry whose expiry the kernel has not
    // processed yet shows no time left and no expirations, as a disarmed
    // one does: look again once the expiry is in (a few microseconds).
    if let FileKind::TimerFd { value_ns: 0, interval_ns: 1.., ticks: 0, .. } = kind {
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let again = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok().and_then(|t| parse(name, &t, vpid).ok());
            if let Some(k @ FileKind::TimerFd { .. }) = again.filter(|k| !matches!(k, FileKind::TimerFd { value_ns: 0, ticks: 0, .. })) {
                return Ok(k);
            }
        }
    }
    Ok(kind)
}

/// Parses the fdinfo `text` of an event fd of kind `name`; epoll watches
/// come back with file id `u32::MAX` until [`resolve_watches`].
fn parse(name: &str, text: &str, vpid: i32) -> std::result::Result<FileKind, String> {
    let field = |key: &str| -> std::result::Result<&str, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
            .ok_or_else(|| format!("no \"{key}\" in its fdinfo"))
    };
    let hex = |key: &str| -> std::result::Result<u64, String> {
        let v = field(key)?;
        u64::from_str_radix(v, 16).map_err(|_| format!("bad {key} {v:?}"))
    };
    match name {
        "[eventfd]" => Ok(FileKind::EventFd {
            count: hex("eventfd-count")?,
            semaphore: field("eventfd-semaphore").map(|v| v == "1").unwrap_or(false),
        }),
        "[signalfd]" => Ok(FileKind::SignalFd { mask: hex("sigmask")? }),
        "[timerfd]" => {
            let num = |key: &str| -> std::result::Result<i64, String> {
                let v = field(key)?;
                v.parse().map_err(|_| format!("bad {key} {v:?}"))
            };
            let pair = |key: &str| -> std::result::Result<u64, String> {
                let v = field(key)?;
                let (s, ns) = v
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .and_then(|v| v.split_once(','))
                    .ok_or_else(|| format!("bad {key} {v:?}"))?;
                let (s, ns): (u64, u64) = (s.trim().parse().map_err(|_| format!("bad {key}"))?, ns.trim().parse().map_err(|_| format!("bad {key}"))?);
                s.checked_mul(NS).and_then(|s| s.checked_add(ns)).ok_or_else(|| format!("{key} overflows"))
            };
            let flags = field("settime flags")?;
            Ok(FileKind::TimerFd {
                clock: num("clockid")? as i32,
                value_ns: pair("it_value")?,
                interval_ns: pair("it_interval")?,
                flags: i32::from_str_radix(flags, 8).map_err(|_| format!("bad settime flags {flags:?}"))?,
                ticks: num("ticks")? as u64,
            })
        }
        _ => {
            // "tfd:        5 events:       19 data:                7  pos:0 ino:40f sdev:10"
            let mut watches = Vec::new();
            for line in text.lines().filter(|l| l.starts_with("tfd:")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
                let bad = || format!("unreadable watch {line:?}");
                let fd = at("tfd:").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                let events = at("events:").and_then(|v| u32::from_str_radix(v, 16).ok()).ok_or_else(bad)?;
                let data = at("data:").and_then(|v| u64::from_str_radix(v, 16).ok()).ok_or_else(bad)?;
                watches.push(EpollWatch { fd, file: u32::MAX, events, data });
            }
            Ok(FileKind::Epoll { owner: vpid, watches })
        }
    }
}

const NS: u64 = 1_000_000_000;

/// Names each epoll watch's file: `fds` maps (vpid, fd) to file ids, `rep`
/// gives the host pid and fd of the epoll file's owner. Fails when a watched
/// fd number no longer refers to the watched file in the owner.
pub fn resolve_watches(f: &mut FileImage, owner_pid: i32, epfd: i32, fds: &HashMap<(i32, i32), u32>) -> Result<()> {
    let FileKind::Epoll { owner, watches } = &mut f.kind else { return Ok(()) };
    let unsupported = |what: String| Error::Unsupported { pid: *owner, what: format!("fd {epfd} (epoll {what})") };
    let mut seen = std::collections::HashSet::new();
    for w in watches.iter_mut() {
        if !seen.insert(w.fd) {
            return Err(unsupported(format!("watches two files under fd number {}", w.fd)));
        }
        let closed = || unsupported(format!("watches a file fd {} no longer refers to", w.fd));
        let id = *fds.get(&(*owner, w.fd)).ok_or_else(closed)?;
        match crate::sys::kcmp_epoll_watch(owner_pid, w.fd, epfd) {
            Ok(true) => w.file = id,
            Ok(false) => return Err(closed()),
            Err(e) => return Err(Error::Io { context: format!("compare the watches of epoll fd {epfd} of task {owner}"), cause: e }),
        }
    }
    Ok(())
}

/// A one-line description for `stasis inspect`.
pub fn describe(kind: &FileKind) -> Option<String> {
    Some(match kind {
        FileKind::EventFd { count, semaphore } => format!("eventfd (count {count}{})", if *semaphore { ", semaphore" } else { "" }),
        FileKind::SignalFd { mask } => format!("signalfd (mask {mask:#x})"),
        FileKind::TimerFd { clock, value_ns, interval_ns, ticks, .. } => {
            format!("timerfd (clock {clock}, {value_ns} ns left, period {interval_ns} ns, {ticks} unread)")
        }
        FileKind::Epoll { watches, .. } => {
            let list: Vec<String> = watches.iter().map(|w| format!("fd {} events {:#x}", w.fd, w.events)).collect();
            format!("epoll ({})", if list.is_empty() { "no watches".into() } else { list.join(", ") })
        }
        _ => return None,
    })
}

// Restore side: runs in the restore stub (see `restore::stub`), which
// reports errors as strings.

type R<T> = std::result::Result<T, String>;

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Creates the descriptor of an event file.
pub fn open(kind: &FileKind) -> R<i32> {
    match kind {
        FileKind::EventFd { count, semaphore } => open_eventfd(*count, *semaphore),
        FileKind::SignalFd { mask } => open_signalfd(*mask),
        FileKind::TimerFd { clock, value_ns, interval_ns, flags, ticks } => open_timerfd(*clock, *value_ns, *interval_ns, *flags, *ticks),
        FileKind::Epoll { .. } => {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::epoll_create1(0) };
            if fd < 0 {
                Err(errno("epoll_create1"))
            } else {
                Ok(fd)
            }
        }
        _ => Err("not an event file".into()),
    }
}

fn open_eventfd(count: u64, semaphore: bool) -> R<i32> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, if semaphore { libc::EFD_SEMAPHORE } else { 0 }) };
    if fd < 0 {
        return Err(errno("eventfd"));
    }
    // SAFETY: writing 8 bytes from a live u64.
    if count > 0 && unsafe { libc::write(fd, (&count as *const u64).cast(), 8) } != 8 {
        let e = errno(&format!("set eventfd count {count}"));
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

fn open_signalfd(mask: u64) -> R<i32> {
    // The kernel takes the mask as a sigset of `sizeof(u64)` bytes.
    // SAFETY: the kernel reads 8 bytes from `mask`, which lives across the call.
    let fd = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, 0) };
    if fd < 0 {
        return Err(errno("signalfd"));
    }
    Ok(fd as i32)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec { tv_sec: (ns / NS) as libc::time_t, tv_nsec: (ns % NS) as libc::c_long }
}

fn open_timerfd(clock: i32, value_ns: u64, interval_ns: u64, flags: i32, ticks: u64) -> R<i32> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::timerfd_create(clock, 0) };
    if fd < 0 {
        return Err(errno(&format!("timerfd_create on clock {clock}")));
    }
    let r = arm_timerfd(fd, clock, value_ns, interval_ns, flags, ticks);
    if r.is_err() {
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
    }
    r.map(|_| fd)
}

fn arm_timerfd(fd: i32, clock: i32, value_ns: u64, interval_ns: u64, flags: i32, ticks: u64) -> R<()> {
    // A periodic timer that expired and was not read since shows no time
    // left (the kernel moves it on only when it is read): its next
    // expiration is a period away.
    let value_ns = if value_ns == 0 && interval_ns > 0 && ticks > 0 { interval_ns } else { value_ns };
    if value_ns > 0 {
        let mut value = timespec(value_ns);
        if flags & libc::TFD_TIMER_ABSTIME != 0 {
            let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // The alarm clocks read like their plain counterparts.
            let read_clock = match clock {
                libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
                libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
                c => c,
            };
            // SAFETY: clock_gettime fills a live timespec.
            if unsafe { libc::clock_gettime(read_clock, &mut now) } < 0 {
                return Err(errno(&format!("read clock {clock}")));
            }
            let at = (now.tv_sec as u64).saturating_mul(NS).saturating_add(now.tv_nsec as u64).saturating_add(value_ns);
            value = timespec(at);
        }
        let spec = libc::itimerspec { it_interval: timespec(interval_ns), it_value: value };
        // SAFETY: the kernel reads a live itimerspec; no old value is asked for.
        if unsafe { libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()) } < 0 {
            return Err(errno("arm timerfd"));
        }
    }
    // After arming: timerfd_settime clears the count.
    if ticks > 0 {
        // TFD_IOC_SET_TICKS = _IOW('T', 0, u64)
        const SET_TICKS: libc::c_ulong = (1 << 30) | (8 << 16) | ((b'T' as libc::c_ulong) << 8);
        // SAFETY: the kernel reads a u64 from `ticks`, which lives across the call.
        if unsafe { libc::ioctl(fd, SET_TICKS, &ticks as *const u64) } < 0 {
            return Err(errno(&format!("set {ticks} unread timerfd expirations")));
        }
    }
    Ok(())
}

/// Registers the watches of every epoll instance task `t` owns; its fds
/// must already be at their numbers.
pub fn register_watches(files: &[FileImage], t: &TaskImage) -> R<()> {
    for f in files {
        let FileKind::Epoll { owner, watches } = &f.kind else { continue };
        if *owner != t.pid {
            continue;
        }
        let epfd = t.fds.iter().find(|d| d.file == f.id).map(|d| d.fd).ok_or_else(|| format!("epoll file {} is not open in its owner", f.id))?;
        for w in watches {
            let mut ev = libc::epoll_event { events: w.events, u64: w.data };
            // SAFETY: the kernel reads a live epoll_event.
            if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, w.fd, &mut ev) } < 0 {
                return Err(errno(&format!("epoll fd {epfd}: watch fd {} (events {:#x})", w.fd, w.events)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fdinfo_of_each_kind() {
        let ev = "pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1039\neventfd-count:                5\neventfd-id: 1\neventfd-semaphore: 1\n";
        assert!(matches!(parse("[eventfd]", ev, 1), Ok(FileKind::EventFd { count: 5, semaphore: true })));
        let sig = "pos:\t0\nflags:\t02\nsigmask:\t0000000000000200\n";
        assert!(matches!(parse("[signalfd]", sig, 1), Ok(FileKind::SignalFd { mask: 0x200 })));
        let tfd = "clockid: 1\nticks: 3\nsettime flags: 03\nit_value: (2, 988444841)\nit_interval: (1, 500)\n";
        match parse("[timerfd]", tfd, 1) {
            Ok(FileKind::TimerFd { clock: 1, value_ns, interval_ns, flags: 3, ticks: 3 }) => {
                assert_eq!((value_ns, interval_ns), (2_988_444_841, 1_000_000_500));
            }
            other => panic!("{other:?}"),
        }
        let ep = "pos:\t0\nflags:\t02\ntfd:        5 events: 40000019 data:                7  pos:0 ino:40f sdev:10\ntfd:        3 events: 80000019 data:             1234  pos:0 ino:40f sdev:10\n";
        match parse("[eventpoll]", ep, 9) {
            Ok(FileKind::Epoll { owner: 9, watches }) => assert_eq!(
                watches,
                [
                    EpollWatch { fd: 5, file: u32::MAX, events: 0x4000_0019, data: 7 },
                    EpollWatch { fd: 3, file: u32::MAX, events: 0x8000_0019, data: 0x1234 }
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_unreadable_fdinfo() {
        assert!(parse("[eventfd]", "pos:\t0\n", 1).unwrap_err().contains("eventfd-count"));
        assert!(parse("[timerfd]", "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: 2, 3\nit_interval: (0, 0)\n", 1).unwrap_err().contains("it_value"));
        assert!(parse("[eventpoll]", "tfd: x events: 1 data: 2\n", 1).unwrap_err().contains("unreadable watch"));
    }
}
