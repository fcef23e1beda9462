//! Scheduling: each thread's policy and its parameters (`sched_getattr`:
//! nice value, real-time priority, deadline parameters, reset-on-fork), its
//! timer slack (`/proc/TID/timerslack_ns`) and I/O priority (`ioprio_get`).
//!
//! Also its CPU affinity, but only where the thread narrowed it below what
//! its cpuset allows (`taskset`, `sched_setaffinity`): a thread that may run
//! on all of its cpuset's CPUs is left to the cpuset of the restored
//! container, which may have other CPUs. A saved affinity none of whose
//! CPUs the restored thread may use fails the restore.
//!
//! All are read and set by the engine from outside, by host tid: nothing
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

/// CPUs in a list such as `0-3,8,10-11` (cpuset files, `/sys/devices/system/cpu/online`).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
        if b < a || b >= MAX_CPUS {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

/// The most CPUs an affinity mask here can name (`cpu_set_t`).
pub const MAX_CPUS: u32 = 1024;

/// The CPUs the cpuset of process `pid` gives it: its cgroup v1 cpuset's
/// `cpuset.effective_cpus`, else its cgroup v2 `cpuset.cpus.effective`,
/// else every online CPU.
fn cpuset_cpus(pid: i32) -> Option<Vec<u32>> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        ctrl.split(',').any(|c| c == "cpuset").then(|| format!("/sys/fs/cgroup/cpuset{path}/cpuset.effective_cpus"))
    });
    let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::")).map(|p| {
        let root = if std::path::Path::new("/sys/fs/cgroup/unified").is_dir() { "/sys/fs/cgroup/unified" } else { "/sys/fs/cgroup" };
        format!("{root}{p}/cpuset.cpus.effective")
    });
    for file in [v1, v2].into_iter().flatten() {
        if let Some(cpus) = std::fs::read_to_string(file).ok().and_then(|t| parse_cpu_list(&t)) {
            return Some(cpus);
        }
    }
    parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?)
}

/// The affinity of host thread `tid` of process `pid`, if narrower than
/// its cpuset.
pub fn dump_affinity(pid: i32, tid: i32) -> Result<Option<Vec<u32>>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid)).ctx(|| format!("read the CPU affinity of thread {tid}"))?;
    let mine: Vec<u32> = (0..MAX_CPUS).filter(|&c| set.is_set(c as usize).unwrap_or(false)).collect();
    let allowed = cpuset_cpus(pid).unwrap_or_default();
    Ok((allowed.iter().any(|c| !mine.contains(c))).then_some(mine))
}

/// Restricts host thread `tid` to `cpus`.
pub fn restore_affinity(tid: i32, cpus: &[u32]) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c as usize).ctx(|| format!("CPU {c} in the affinity of thread {tid}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
        .ctx(|| format!("restrict thread {tid} to CPUs {cpus:?} (none of them allowed here?)"))
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
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-5000"), None);
        // Free to use its whole cpuset: nothing to save.
        assert_eq!(dump_affinity(std::process::id() as i32, tid).unwrap(), None);
    }
}
