//! File locks: POSIX record locks (`fcntl(F_SETLK)`), OFD record locks
//! (`F_OFD_SETLK`) and `flock` locks.
//!
//! **Dump.** `/proc/PID/fdinfo/FD` lists, as `lock:` lines, the locks taken
//! through that fd: a POSIX lock under each fd of the process that refers
//! to the open file it was taken through, an OFD or `flock` lock under
//! every fd (in every process) that refers to its open file description.
//! Each line gives the kind, READ or WRITE, and for record locks the byte
//! range (last byte inclusive, or `EOF`). Leases and locks on anything but
//! regular files and directories are refused.
//!
//! **Restore.** Each task takes its locks again through its own fd numbers
//! while the engine rebuilds it ([`take`], injected after the task's
//! staging and helper fds are closed): closing any fd of a file drops the
//! POSIX locks the process holds on it, so taking them earlier would lose
//! them. Taking an OFD or `flock` lock again through another fd of the same
//! open file description changes nothing, so every holder takes them. The
//! calls do not wait: a lock held by someone else (the still-running
//! original of a `--leave-running` checkpoint, say) fails the restore.

use crate::model::{FileKind, FileLock, LockKind, TaskImage};
use crate::sys::inject::Batch;

/// The locks listed in fdinfo `text`; `Err` names one that cannot be saved.
pub fn parse(text: &str) -> Result<Vec<FileLock>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lock:") else { continue };
        // "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let w: Vec<&str> = rest.split_whitespace().collect();
        let kind = match w.get(1).copied() {
            Some("POSIX") => LockKind::Posix,
            Some("OFDLCK") => LockKind::Ofd,
            Some("FLOCK") => LockKind::Flock,
            Some(k) => return Err(format!("a {k} file lock")),
            None => return Err(format!("a file lock listed as {rest:?}")),
        };
        let bad = || format!("a file lock listed as {:?}", rest.trim());
        let write = match w.get(3).copied() {
            Some("WRITE") => true,
            Some("READ") => false,
            _ => return Err(bad()),
        };
        let start: u64 = w.get(6).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let end = match w.get(7).copied() {
            Some("EOF") => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| bad())?),
            None => return Err(bad()),
        };
        out.push(FileLock { kind, write, start, end });
    }
    Ok(out)
}

/// Files that can carry locks in an image.
pub fn lockable(kind: &FileKind) -> bool {
    matches!(kind, FileKind::Regular { .. } | FileKind::Directory { .. } | FileKind::Unlinked { .. })
}

/// A lock's range is valid: `flock` locks cover the whole file, record
/// locks end at or after their start, within `off_t`.
pub fn valid(l: &FileLock) -> bool {
    let max = i64::MAX as u64;
    match l.kind {
        LockKind::Flock => l.start == 0 && l.end.is_none(),
        LockKind::Posix | LockKind::Ofd => l.start <= max && l.end.is_none_or(|e| e >= l.start && e <= max),
    }
}

/// "POSIX WRITE 0-EOF", for messages and `stasis inspect`.
pub fn describe(l: &FileLock) -> String {
    let kind = match l.kind {
        LockKind::Posix => "POSIX",
        LockKind::Ofd => "OFD",
        LockKind::Flock => "FLOCK",
    };
    let end = l.end.map_or("EOF".to_string(), |e| e.to_string());
    format!("{kind} {} {}-{end}", if l.write { "WRITE" } else { "READ" }, l.start)
}

/// Queues, in task `t`, the calls that take its locks again (without
/// waiting: EAGAIN or EWOULDBLOCK fail the batch, naming the lock).
pub fn take(b: &mut Batch, t: &TaskImage) -> std::io::Result<()> {
    let mut done = std::collections::HashSet::new();
    for d in &t.fds {
        for l in &d.locks {
            if !done.insert((d.file, *l)) {
                continue;
            }
            let what = format!("take the {} lock on fd {} again (is it held elsewhere?)", describe(l), d.fd);
            let fd = d.fd as u64;
            if l.kind == LockKind::Flock {
                let op = if l.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
                b.call(libc::SYS_flock, &[fd, op as u64], what)?;
                continue;
            }
            // struct flock: l_type, l_whence (shorts), l_start, l_len, l_pid.
            let len = l.end.map_or(0, |e| e - l.start + 1);
            let ty = if l.write { libc::F_WRLCK } else { libc::F_RDLCK } as u16;
            let mut fl = Vec::with_capacity(32);
            fl.extend_from_slice(&ty.to_le_bytes());
            fl.extend_from_slice(&(libc::SEEK_SET as u16).to_le_bytes());
            fl.extend_from_slice(&[0; 4]);
            fl.extend_from_slice(&l.start.to_le_bytes());
            fl.extend_from_slice(&len.to_le_bytes());
            fl.extend_from_slice(&[0; 8]); // l_pid 0 (OFD locks require it), padding
            let at = b.put(&fl)?;
            let cmd = if l.kind == LockKind::Ofd { libc::F_OFD_SETLK } else { libc::F_SETLK };
            b.call(libc::SYS_fcntl, &[fd, cmd as u64, at], what)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lock_lines() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t30\nino:\t5678\n\
            lock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 99\n\
            lock:\t2: POSIX  ADVISORY  READ  1234 08:01:5678 200 EOF\n\
            lock:\t3: OFDLCK ADVISORY  WRITE -1 08:01:5678 10 19\n\
            lock:\t4: FLOCK  ADVISORY  READ  1234 08:01:5678 0 EOF\n";
        let l = parse(text).unwrap();
        assert_eq!(
            l,
            vec![
                FileLock { kind: LockKind::Posix, write: true, start: 0, end: Some(99) },
                FileLock { kind: LockKind::Posix, write: false, start: 200, end: None },
                FileLock { kind: LockKind::Ofd, write: true, start: 10, end: Some(19) },
                FileLock { kind: LockKind::Flock, write: false, start: 0, end: None },
            ]
        );
        assert!(l.iter().all(valid));
        assert_eq!(describe(&l[0]), "POSIX WRITE 0-99");
        assert_eq!(parse("pos:\t0\n").unwrap(), vec![]);
        let lease = "lock:\t1: LEASE  ACTIVE    READ  1234 08:01:5678 0 EOF\n";
        assert_eq!(parse(lease).unwrap_err(), "a LEASE file lock");
        assert!(parse("lock:\t1: POSIX  ADVISORY  UNLCK 1 08:01:5 0 EOF\n").is_err());
        assert!(parse("lock:\t1: POSIX  ADVISORY  WRITE 1 08:01:5 x EOF\n").is_err());
        assert!(!valid(&FileLock { kind: LockKind::Flock, write: true, start: 1, end: None }));
        assert!(!valid(&FileLock { kind: LockKind::Posix, write: true, start: 5, end: Some(4) }));
        assert!(!valid(&FileLock { kind: LockKind::Ofd, write: true, start: u64::MAX, end: None }));
    }
}
