//! POSIX timers (`timer_create`): one list per process.
//!
//! **Dump.** `/proc/PID/timers` lists each timer's id, signal and
//! `sigev_value`, how it notifies (a signal to the process or to one thread,
//! or nothing) and its clock. The time to its next expiry and its period
//! exist only inside the process: `timer_gettime` is injected with the other
//! queries of `crate::task`. A periodic timer whose signal is still queued
//! has not been re-armed yet and reads 0; it is re-armed a period ahead.
//! The queued signal itself is saved with the process's other pending
//! signals; overruns counted for it are not kept.
//!
//! **Restore.** The engine injects `timer_create` with
//! `PR_TIMER_CREATE_RESTORE_IDS` on (Linux 6.16 and later), which makes the
//! kernel take the id the process already holds, then `timer_settime` with
//! the time left, counted from the restore (also for timers armed with
//! `TIMER_ABSTIME`). It runs after the process's threads exist, for timers
//! that signal one thread.

use crate::model::PosixTimer;
use crate::sys::inject::Batch;

pub const SIGEV_SIGNAL: i32 = 0;
pub const SIGEV_NONE: i32 = 1;
pub const SIGEV_THREAD_ID: i32 = 4;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
/// Clocks a timer may use: REALTIME, MONOTONIC, PROCESS_CPUTIME_ID,
/// THREAD_CPUTIME_ID, BOOTTIME, REALTIME_ALARM, BOOTTIME_ALARM, TAI.
pub const CLOCKS: [i32; 8] = [0, 1, 2, 3, 7, 8, 9, 11];

/// One entry of `/proc/PID/timers`; `target` is a host pid or tid.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcTimer {
    pub id: i32,
    pub clock: i32,
    pub notify: i32,
    pub signal: i32,
    pub value: u64,
    pub target: i32,
}

/// Parses `/proc/PID/timers`:
///
/// ```text
/// ID: 42
/// signal: 10/00000000feedface
/// notify: signal/tid.1234
/// ClockID: 1
/// ```
pub fn parse(text: &str) -> Result<Vec<ProcTimer>, String> {
    const UNSET: i32 = i32::MIN;
    let mut out: Vec<ProcTimer> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else { continue };
        let bad = || format!("a POSIX timer listed as {line:?}");
        if k == "ID" {
            out.push(ProcTimer { id: v.parse().map_err(|_| bad())?, clock: UNSET, notify: UNSET, signal: 0, value: 0, target: 0 });
            continue;
        }
        let t = out.last_mut().ok_or_else(bad)?;
        match k {
            "signal" => {
                let (sig, val) = v.split_once('/').ok_or_else(bad)?;
                t.signal = sig.parse().map_err(|_| bad())?;
                t.value = u64::from_str_radix(val, 16).map_err(|_| bad())?;
            }
            "notify" => {
                let (how, who) = v.split_once('/').ok_or_else(bad)?;
                let (unit, num) = who.split_once('.').ok_or_else(bad)?;
                t.target = num.parse().map_err(|_| bad())?;
                t.notify = match (how, unit) {
                    ("signal", "pid") => SIGEV_SIGNAL,
                    ("none", "pid") => SIGEV_NONE,
                    ("signal", "tid") => SIGEV_THREAD_ID,
                    _ => return Err(format!("a POSIX timer that notifies by {v:?}")),
                };
            }
            "ClockID" => t.clock = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    if let Some(t) = out.iter().find(|t| t.clock == UNSET || t.notify == UNSET) {
        return Err(format!("POSIX timer {} listed without its clock or notification", t.id));
    }
    if let Some(t) = out.iter().find(|t| !CLOCKS.contains(&t.clock)) {
        return Err(format!("POSIX timer {} on clock {} (a CPU clock of another process?)", t.id, t.clock));
    }
    Ok(out)
}

/// `struct itimerspec` (interval, then value; seconds and nanoseconds) as
/// the kernel fills it, to (value, interval) in nanoseconds.
pub fn from_itimerspec(b: &[u8; 32]) -> (u64, u64) {
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let ns = |s: u64, n: u64| s.saturating_mul(1_000_000_000).saturating_add(n);
    (ns(w(2), w(3)), ns(w(0), w(1)))
}

fn itimerspec(value_ns: u64, interval_ns: u64) -> Vec<u8> {
    let g = 1_000_000_000;
    [interval_ns / g, interval_ns % g, value_ns / g, value_ns % g].iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Queues, in the process being restored, the calls that create its timers
/// with their ids and arm them.
pub fn restore(b: &mut Batch, timers: &[PosixTimer]) -> std::io::Result<()> {
    if timers.is_empty() {
        return Ok(());
    }
    b.call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 1], "ask for timer ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+)")?;
    for t in timers {
        // struct sigevent: sigev_value, sigev_signo, sigev_notify, then
        // the union whose first int is the target thread; 64 bytes.
        let mut ev = Vec::with_capacity(64);
        ev.extend_from_slice(&t.value.to_le_bytes());
        ev.extend_from_slice(&t.signal.to_le_bytes());
        ev.extend_from_slice(&t.notify.to_le_bytes());
        ev.extend_from_slice(&t.tid.to_le_bytes());
        ev.resize(64, 0);
        let ev = b.put(&ev)?;
        let id = b.put(&t.id.to_le_bytes())?;
        b.call(libc::SYS_timer_create, &[t.clock as u64, ev, id], format!("create POSIX timer {}", t.id))?;
        let its = b.put(&itimerspec(t.value_ns, t.interval_ns))?;
        b.call(libc::SYS_timer_settime, &[t.id as u64, 0, its, 0], format!("arm POSIX timer {}", t.id))?;
    }
    b.call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 0], "stop asking for timer ids")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_timers() {
        let text = "ID: 42\nsignal: 10/00000000feedface\nnotify: signal/tid.1234\nClockID: 1\n\
                    ID: 0\nsignal: 14/0000000000000000\nnotify: none/pid.77\nClockID: 0\n\
                    ID: 3\nsignal: 34/0000000000000001\nnotify: signal/pid.77\nClockID: 2\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                ProcTimer { id: 42, clock: 1, notify: SIGEV_THREAD_ID, signal: 10, value: 0xfeedface, target: 1234 },
                ProcTimer { id: 0, clock: 0, notify: SIGEV_NONE, signal: 14, value: 0, target: 77 },
                ProcTimer { id: 3, clock: 2, notify: SIGEV_SIGNAL, signal: 34, value: 1, target: 77 },
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("signal: 10/0\n").is_err());
        assert!(parse("ID: 1\nsignal: 10/0\nnotify: signal/pid.1\n").unwrap_err().contains("without its clock"));
        assert!(parse("ID: 1\nsignal: 10/0\nnotify: thread/pid.1\nClockID: 1\n").unwrap_err().contains("notifies by"));
        assert!(parse("ID: 1\nsignal: 10/0\nnotify: signal/pid.1\nClockID: -6\n").unwrap_err().contains("clock -6"));
        let mut b = [0u8; 32];
        for (i, w) in [2u64, 5, 30, 7].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(from_itimerspec(&b), (30_000_000_007, 2_000_000_005));
        assert_eq!(itimerspec(30_000_000_007, 2_000_000_005), b.to_vec());
    }
}
