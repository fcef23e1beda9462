//! Scheduling: each thread's policy and its parameters (`sched_getattr`:
//! nice value, real-time priority, deadline parameters, reset-on-fork), its
//! timer slack (`/proc/TID/timerslack_ns`) and I/O priority (`ioprio_get`).
//!
//! Both are read and set by the engine from outside, by host tid: nothing
//! is injected. The restore sets them last, once each thread is otherwise
//! rebuilt, so a real-time policy does not apply while the engine works.

use crate::error::{Context, Result};
use crate::model::Sched;

pub const SCHED_OTHER: u32 = 0;
pub const SCHED_FIFO: u32 = 1;
pub const SCHED_RR: u32 = 2;
pub const SCHED_BATCH: u32 = 3;
pub const SCHED_IDLE: u32 = 5;
pub const SCHED_DEADLINE: u32 = 6;
/// Flags kept: RESET_ON_FORK, RECLAIM, DL_OVERRUN. (The utilisation clamp
/// flags describe fields not saved.)
pub const FLAGS: u64 = 0x7;

/// The scheduling state of host thread `tid`.
pub fn dump(tid: i32) -> Result<Sched> {
    let a = crate::sys::sched_getattr(tid).ctx(|| format!("read the scheduling policy of thread {tid}"))?;
    let slack = std::fs::read_to_string(format!("/proc/{tid}/timerslack_ns")).ctx(|| format!("read the timer slack of thread {tid}"))?;
    // For the other policies the kernel reports the time slice in
    // `runtime` (EEVDF); only a custom one would need setting, and those
    // are not kept.
    let dl = a.policy == SCHED_DEADLINE;
    Ok(Sched {
        policy: a.policy,
        flags: a.flags & FLAGS,
        nice: a.nice,
        priority: a.priority,
        runtime: if dl { a.runtime } else { 0 },
        deadline: if dl { a.deadline } else { 0 },
        period: if dl { a.period } else { 0 },
        timerslack_ns: slack.trim().parse().unwrap_or(0),
        ioprio: crate::sys::ioprio_get(tid).ctx(|| format!("read the I/O priority of thread {tid}"))?,
    })
}

/// Gives host thread `tid` the scheduling state `s`.
pub fn restore(tid: i32, s: &Sched) -> Result<()> {
    std::fs::write(format!("/proc/{tid}/timerslack_ns"), s.timerslack_ns.to_string())
        .ctx(|| format!("set the timer slack of thread {tid}"))?;
    if s.ioprio != 0 {
        crate::sys::ioprio_set(tid, s.ioprio).ctx(|| format!("set I/O priority {:#x} of thread {tid}", s.ioprio))?;
    }
    if *s == (Sched { timerslack_ns: s.timerslack_ns, ioprio: s.ioprio, ..Default::default() }) {
        return Ok(()); // SCHED_OTHER, nice 0: what the thread has already.
    }
    let a = crate::sys::SchedAttr {
        policy: s.policy,
        flags: s.flags,
        nice: s.nice,
        priority: s.priority,
        runtime: s.runtime,
        deadline: s.deadline,
        period: s.period,
        ..Default::default()
    };
    crate::sys::sched_setattr(tid, a)
        .ctx(|| format!("set scheduling policy {} (nice {}, priority {}) of thread {tid}", s.policy, s.nice, s.priority))
}

/// `s` is a state `sched_setattr` accepts.
pub fn valid(s: &Sched) -> bool {
    let rt = matches!(s.policy, SCHED_FIFO | SCHED_RR);
    let known = matches!(s.policy, SCHED_OTHER | SCHED_FIFO | SCHED_RR | SCHED_BATCH | SCHED_IDLE | SCHED_DEADLINE);
    let dl = s.policy == SCHED_DEADLINE || (s.runtime == 0 && s.deadline == 0 && s.period == 0);
    // I/O priority: class NONE, RT, BE or IDLE (0-3), level 0-7.
    let io = s.ioprio >> 13 <= 3 && s.ioprio & 0x1fff <= 7;
    io && known && dl && s.flags & !FLAGS == 0 && (-20..=19).contains(&s.nice) && (if rt { (1..=99).contains(&s.priority) } else { s.priority == 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_round_trip() {
        let tid = nix::unistd::gettid().as_raw();
        let before = dump(tid).unwrap();
        assert!(valid(&before), "{before:?}");
        let want = Sched { policy: SCHED_BATCH, nice: 7, timerslack_ns: 123_456, ioprio: 2 << 13 | 6, ..Default::default() };
        restore(tid, &want).unwrap();
        assert_eq!(dump(tid).unwrap(), want);
        assert!(!valid(&Sched { policy: SCHED_FIFO, ..Default::default() }));
        assert!(!valid(&Sched { nice: 20, ..Default::default() }));
        assert!(!valid(&Sched { policy: 4, ..Default::default() }));
        assert!(!valid(&Sched { flags: 0x8, ..Default::default() }));
        assert!(!valid(&Sched { runtime: 1, ..Default::default() }));
        assert!(!valid(&Sched { ioprio: 4 << 13, ..Default::default() }));
        assert!(!valid(&Sched { ioprio: 8, ..Default::default() }));
        assert!(valid(&Sched { policy: SCHED_RR, priority: 10, flags: 1, ..Default::default() }));
    }
}
