//! Cgroup freezing: the v1 `freezer` controller (`freezer.state`) or the
//! v2 `cgroup.freeze` file, whichever holds the task. Freezing first makes
//! the whole container stop at once, so seizing it cannot race with forks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freezer {
    /// Directory of the v1 freezer cgroup.
    V1(PathBuf),
    /// Directory of the v2 cgroup.
    V2(PathBuf),
}

/// `path` (a cgroup path as `/proc/<pid>/cgroup` shows it) under the first
/// mount in `mountinfo` (the text of `/proc/self/mountinfo`) of `fstype`
/// (`cgroup` or `cgroup2`), with the super option `controller` for a v1
/// hierarchy. A mount of a sub-tree (root not `/`) shows the paths below
/// its root; a path outside it gives `None`.
pub fn cgroup_dir(mountinfo: &str, fstype: &str, controller: Option<&str>, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut pre = pre.split_whitespace();
        let root = pre.nth(3)?;
        let mount_point = pre.next()?;
        let mut post = post.split_whitespace();
        if post.next()? != fstype {
            return None;
        }
        if let Some(c) = controller {
            if !post.nth(1)?.split(',').any(|o| o == c) {
                return None;
            }
        }
        let rel = if root == "/" { path } else { path.strip_prefix(root)? };
        Some(Path::new(mount_point).join(rel.trim_start_matches('/')))
    })
}

impl Freezer {
    /// The freezer of the cgroup `pid` is in (v1 freezer preferred, as runc
    /// uses it on hybrid hosts); `None` when the task sits in a root cgroup.
    pub fn of_pid(pid: i32) -> io::Result<Option<Freezer>> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let mut v2 = None;
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (_, ctrl, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
            if ctrl.split(',').any(|c| c == "freezer") && path != "/" {
                if let Some(d) = cgroup_dir(&mountinfo, "cgroup", Some("freezer"), path) {
                    return Ok(Some(Freezer::V1(d)));
                }
            }
            if ctrl.is_empty() && path != "/" {
                v2 = cgroup_dir(&mountinfo, "cgroup2", None, path).map(Freezer::V2);
            }
        }
        Ok(v2)
    }

    pub fn dir(&self) -> &Path {
        match self {
            Freezer::V1(p) | Freezer::V2(p) => p,
        }
    }

    pub fn is_frozen(&self) -> io::Result<bool> {
        match self {
            Freezer::V1(p) => Ok(fs::read_to_string(p.join("freezer.state"))?.trim() == "FROZEN"),
            Freezer::V2(p) => Ok(fs::read_to_string(p.join("cgroup.events"))?.lines().any(|l| l == "frozen 1")),
        }
    }

    /// Freezes the cgroup and waits until every task is frozen.
    pub fn freeze(&self) -> io::Result<()> {
        self.freeze_within(Duration::from_secs(10))
    }

    /// Freezes the cgroup and waits at most `limit` for every task to be
    /// frozen; on a timeout the cgroup is thawed again.
    pub fn freeze_within(&self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        let mut delay = Duration::from_micros(100);
        loop {
            match self {
                Freezer::V1(p) => fs::write(p.join("freezer.state"), "FROZEN")?,
                Freezer::V2(p) => fs::write(p.join("cgroup.freeze"), "1")?,
            }
            if self.is_frozen()? {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.thaw();
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{} did not freeze", self.dir().display())));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    pub fn thaw(&self) -> io::Result<()> {
        match self {
            Freezer::V1(p) => fs::write(p.join("freezer.state"), "THAWED"),
            Freezer::V2(p) => fs::write(p.join("cgroup.freeze"), "0"),
        }
    }

    /// Every pid in the cgroup (and its sub-cgroups).
    pub fn pids(&self) -> io::Result<Vec<i32>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir().to_path_buf()];
        while let Some(d) = dirs.pop() {
            let f = if d.join("cgroup.procs").exists() { "cgroup.procs" } else { "tasks" };
            out.extend(fs::read_to_string(d.join(f))?.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            for e in fs::read_dir(&d)?.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_dirs_under_the_mounts_of_mountinfo() {
        let mi = "\
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
";
        assert_eq!(cgroup_dir(mi, "cgroup", Some("freezer"), "/default/c1"), Some(PathBuf::from("/sys/fs/cgroup/freezer/default/c1")));
        assert_eq!(cgroup_dir(mi, "cgroup2", None, "/default/c1"), Some(PathBuf::from("/sys/fs/cgroup/unified/default/c1")));
        assert_eq!(cgroup_dir(mi, "cgroup", Some("cpu"), "/default/c1"), None);
    }

    #[test]
    fn a_sub_tree_mount_shows_paths_below_its_root() {
        let mi = "35 30 0:31 /kubepods /mnt/mem rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup_dir(mi, "cgroup", Some("memory"), "/kubepods/pod1/c1"),
            Some(PathBuf::from("/mnt/mem/pod1/c1"))
        );
        assert_eq!(cgroup_dir(mi, "cgroup", Some("memory"), "/other/c1"), None);
        assert_eq!(cgroup_dir(mi, "cgroup", Some("cpu"), "/kubepods/c1"), None);
    }
}
