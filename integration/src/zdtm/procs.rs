//! Process helpers of the zdtm harness: signals, waiting, /proc state,
//! and the process trees a failure-atomicity test compares before and
//! after (what a failed stasis left behind shows up here).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::Once;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{Run, POLL};

// ---------------------------------------------------------------------------
// Process helpers

pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain prctl on the calling process.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    });
}

pub fn kill(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn alive(pid: i32) -> bool {
    kill(pid, 0).is_ok() && proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// The state letter from /proc/<pid>/stat.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

pub fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Reap `pid` if it is our child (subreaper) or wait for it to vanish.
/// Returns a description of how it ended, or an error on timeout.
pub fn wait_gone(pid: i32, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(if libc::WIFEXITED(status) {
                format!("exited with {}", libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("status {status:#x}")
            });
        }
        if r < 0 && !alive(pid) && !Path::new(&format!("/proc/{pid}")).exists() {
            return Ok("gone (not our child)".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "pid {pid} still exists after {timeout:?} (state {:?})",
                proc_state(pid)
            ));
        }
        sleep(POLL);
    }
}

/// Every thread of `pid` and of its descendants: state, wchan, tracer.
pub fn proc_snapshot(pid: i32, depth: usize, out: &mut String) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        let _ = writeln!(out, "{:indent$}pid {pid}: gone", "", indent = depth * 2);
        return;
    };
    let mut tids: Vec<i32> = tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    let mut children = Vec::new();
    for tid in tids {
        let base = format!("/proc/{pid}/task/{tid}");
        let stat = fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
        let (comm, rest) = match (stat.find('('), stat.rfind(')')) {
            (Some(a), Some(b)) if a < b => (&stat[a + 1..b], stat[b + 1..].trim()),
            _ => ("?", ""),
        };
        let state = rest.split_whitespace().next().unwrap_or("?");
        let wchan = fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
        let status = fs::read_to_string(format!("{base}/status")).unwrap_or_default();
        let field = |f: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(f))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "{:indent$}{}{tid} ({comm}) {state} wchan={wchan} TracerPid={} NSpid={} SigBlk={} SigPnd={} ShdPnd={}",
            "",
            if tid == pid { "pid " } else { "  tid " },
            field("TracerPid:"),
            field("NSpid:"),
            field("SigBlk:"),
            field("SigPnd:"),
            field("ShdPnd:"),
            indent = depth * 2
        );
        if let Ok(stack) = fs::read_to_string(format!("{base}/stack")) {
            for l in stack.lines().take(8) {
                let _ = writeln!(out, "{:indent$}    {l}", "", indent = depth * 2);
            }
        }
        if let Ok(c) = fs::read_to_string(format!("{base}/children")) {
            children.extend(c.split_whitespace().filter_map(|s| s.parse::<i32>().ok()));
        }
    }
    if depth < 4 {
        for c in children {
            proc_snapshot(c, depth + 1, out);
        }
    }
}

pub fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<{}: {e}>", p.display()),
    }
}

pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// ---------------------------------------------------------------------------
// Process trees seen from /proc (failure atomicity and hostile-image tests)

fn numbers_in(path: &str) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The threads of `pid`, sorted (empty when it is gone).
pub fn threads_of(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// `pid` and all its descendants (children of every thread, recursively).
pub fn tree_of(pid: i32) -> std::collections::BTreeSet<i32> {
    let mut out = std::collections::BTreeSet::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        if !out.insert(p) {
            continue;
        }
        for t in threads_of(p) {
            queue.extend(numbers_in(&format!("/proc/{p}/task/{t}/children")));
        }
    }
    out
}

/// Our descendants that are not zombies. A child subreaper (see
/// [`become_subreaper`]) adopts whatever its children leave behind, so
/// this is where processes leaked by a failed stasis show up.
pub fn live_descendants() -> std::collections::BTreeSet<i32> {
    let me = std::process::id() as i32;
    tree_of(me).into_iter().filter(|&p| p != me && alive(p)).collect()
}

/// Waits up to `grace` for every live descendant not in `before` to go;
/// the survivors are added to `run.pids` (so cleanup kills them) and
/// reported with a snapshot.
pub fn expect_no_new_processes(
    run: &mut Run,
    before: &std::collections::BTreeSet<i32>,
    grace: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + grace;
    loop {
        let new: Vec<i32> = live_descendants().difference(before).copied().collect();
        if new.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut snap = String::new();
            for &p in &new {
                proc_snapshot(p, 0, &mut snap);
                run.pids.push(p);
            }
            return Err(format!("processes left behind: {new:?}\n{snap}"));
        }
        sleep(Duration::from_millis(20));
    }
}
