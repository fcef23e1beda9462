//! OOM events. containerd's runc shim publishes `TaskOOM` (`/tasks/oom`)
//! whenever a container's memory cgroup runs out of memory;
//! containerd's CRI plugin turns that into the `OOMKilled` reason kubelet
//! shows. This shim does the same: one thread per running container waits
//! for the cgroup's notification and reports each one.
//!
//! - cgroup v1 (the memory controller on a v1 hierarchy, as on this
//!   project's hybrid hosts): an eventfd registered for `memory.oom_control`
//!   through `cgroup.event_control`. The kernel signals it each time the
//!   cgroup goes out of memory (one kill can take several: the charges that
//!   fail while the victim exits), and once more when the cgroup is
//!   removed: the thread then finds `memory.oom_control` gone and ends.
//!   Every wake-up is an event, as with containerd's runc shim.
//! - cgroup v2: inotify on `memory.events`; every increase of its
//!   `oom_kill` count is an event. The watch ends with the cgroup
//!   (`IN_IGNORED`).
//!
//! A container whose memory cgroup cannot be found or watched runs on
//! without OOM events; the shim logs why.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use stasis_checkpoint::freezer::cgroup_dir;

/// Where the memory cgroup of a process is, and which notification it has.
#[derive(Debug, PartialEq, Eq)]
enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// Starts a thread that calls `on_oom` for every out-of-memory
/// notification (v1) or OOM kill (v2) in the memory cgroup of `pid`, until
/// that cgroup is removed.
pub fn watch(pid: i32, on_oom: impl Fn() + Send + 'static) -> io::Result<()> {
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let found = memory_cgroup(&cgroup, &mountinfo)
        .ok_or_else(|| io::Error::other(format!("no memory cgroup found for pid {pid}")))?;
    let name = format!("oom-{pid}");
    match found {
        MemoryCgroup::V1(dir) => {
            let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?;
            let control = File::open(dir.join("memory.oom_control"))?;
            fs::write(
                dir.join("cgroup.event_control"),
                format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd()),
            )?;
            std::thread::Builder::new().name(name).spawn(move || {
                let _control = control;
                while efd.read().is_ok() {
                    if !dir.join("memory.oom_control").exists() {
                        return; // the cgroup is gone
                    }
                    on_oom();
                }
            })?;
        }
        MemoryCgroup::V2(dir) => {
            let events = dir.join("memory.events");
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
            inotify.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
            let mut seen = oom_kills(&fs::read_to_string(&events)?);
            std::thread::Builder::new().name(name).spawn(move || loop {
                let Ok(evs) = inotify.read_events() else { return };
                if evs.iter().any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED)) {
                    return;
                }
                let Ok(text) = fs::read_to_string(&events) else { return };
                let now = oom_kills(&text);
                for _ in seen..now {
                    on_oom();
                }
                seen = seen.max(now);
            })?;
        }
    }
    Ok(())
}

/// The memory cgroup directory named by `/proc/<pid>/cgroup` (`cgroup`),
/// under the mount points of `/proc/self/mountinfo` (`mountinfo`): the v1
/// memory hierarchy if there is one, else the unified hierarchy when its
/// memory controller is enabled there.
fn memory_cgroup(cgroup: &str, mountinfo: &str) -> Option<MemoryCgroup> {
    let mut v2 = None;
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if controllers.split(',').any(|c| c == "memory") {
            let dir = cgroup_dir(mountinfo, "cgroup", Some("memory"), path)?;
            return Some(MemoryCgroup::V1(dir));
        }
        if controllers.is_empty() {
            v2 = cgroup_dir(mountinfo, "cgroup2", None, path);
        }
    }
    v2.filter(|d| d.join("memory.events").exists()).map(MemoryCgroup::V2)
}

/// The `oom_kill` count of a cgroup v2 `memory.events` file.
fn oom_kills(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
";

    #[test]
    fn v1_memory_hierarchy_wins() {
        let cgroup = "9:freezer:/default/c1\n4:memory:/default/c1\n0::/default/c1\n";
        assert_eq!(
            memory_cgroup(cgroup, MOUNTINFO),
            Some(MemoryCgroup::V1("/sys/fs/cgroup/memory/default/c1".into()))
        );
    }

    #[test]
    fn v2_needs_its_memory_controller() {
        // This hybrid host's unified hierarchy has no memory controller:
        // no memory.events, so nothing to watch.
        let cgroup = "0::/\n";
        let mi = "31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(memory_cgroup(cgroup, mi), None);
    }

    #[test]
    fn oom_kill_count_of_memory_events() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"), 2);
        assert_eq!(oom_kills("low 0\n"), 0);
    }
}
