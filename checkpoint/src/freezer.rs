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

fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mnt = pre.split_whitespace().nth(4)?;
        post.starts_with("cgroup2 ").then(|| PathBuf::from(mnt))
    })
}

fn v1_mount(controller: &str) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let opts = post.split_whitespace().nth(2)?;
        let mnt = pre.split_whitespace().nth(4)?;
        (post.starts_with("cgroup ") && opts.split(',').any(|o| o == controller)).then(|| PathBuf::from(mnt))
    })
}

impl Freezer {
    /// The freezer of the cgroup `pid` is in (v1 freezer preferred, as runc
    /// uses it on hybrid hosts); `None` when the task sits in a root cgroup.
    pub fn of_pid(pid: i32) -> io::Result<Option<Freezer>> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mut v2 = None;
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (_, ctrl, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
            if ctrl.split(',').any(|c| c == "freezer") && path != "/" {
                if let Some(m) = v1_mount("freezer") {
                    return Ok(Some(Freezer::V1(m.join(path.trim_start_matches('/')))));
                }
            }
            if ctrl.is_empty() && path != "/" {
                v2 = cgroup2_mount().map(|m| Freezer::V2(m.join(path.trim_start_matches('/'))));
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
