//! What the fault tests look at: whether the tree runs on untraced,
//! what a failed or killed dump left in the image directory, the outcome
//! of a `stasis` call, and the retry that shows nothing was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use stasis_integration::zdtm::{threads_of, tree_of, Run, StasisOutcome};


pub fn status_field(path: &str, field: &str) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(|v| v.trim().to_string())
}

/// The tree rooted at `root` has exactly the processes `expect`, and no
/// thread of it is traced, stopped or dead. Allows a second for threads
/// to leave a ptrace stop they were just released from.
pub fn check_tree_runs(root: i32, expect: &BTreeSet<i32>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut bad = Vec::new();
        let now = tree_of(root);
        if &now != expect {
            bad.push(format!("the tree's processes changed: {expect:?} -> {now:?}"));
        }
        for &pid in &now {
            let threads = threads_of(pid);
            if threads.is_empty() {
                bad.push(format!("process {pid} is gone"));
            }
            for tid in threads {
                let st = format!("/proc/{pid}/task/{tid}/status");
                let tracer = status_field(&st, "TracerPid");
                let state = status_field(&st, "State");
                if tracer.as_deref() != Some("0") {
                    bad.push(format!("thread {tid} of {pid} is traced (TracerPid {tracer:?})"));
                }
                if let Some(s) = &state {
                    if ["t", "T", "Z", "X"].iter().any(|c| s.starts_with(c)) {
                        bad.push(format!("thread {tid} of {pid} is in state {s}"));
                    }
                }
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(bad.join("; "));
        }
        sleep(Duration::from_millis(10));
    }
}

/// Every thread of the tree is traced by `tracer` (the dump holds it).
pub fn tree_traced_by(root: i32, tracer: i32) -> bool {
    tree_of(root).iter().all(|&pid| {
        threads_of(pid).iter().all(|t| {
            status_field(&format!("/proc/{pid}/task/{t}/status"), "TracerPid") == Some(tracer.to_string())
        })
    })
}

pub fn dir_names(dir: &Path) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

/// A failed dump removes what it wrote: the image directory is empty.
pub fn expect_no_image(dir: &Path) -> Result<(), String> {
    let names = dir_names(dir)?;
    if !names.is_empty() {
        return Err(format!("a failed dump left files in {}: {names:?}", dir.display()));
    }
    Ok(())
}

/// A dump that was killed may leave partial files, never inventory.img.
pub fn expect_incomplete(dir: &Path) -> Result<(), String> {
    let names = dir_names(dir)?;
    if names.iter().any(|n| n == "inventory.img") {
        return Err(format!("a killed dump left a complete-looking image: {names:?}"));
    }
    Ok(())
}

pub fn clear_dir(dir: &Path) -> Result<(), String> {
    for n in dir_names(dir)? {
        fs::remove_file(dir.join(&n)).map_err(|e| format!("remove {n}: {e}"))?;
    }
    Ok(())
}

/// Name -> (mode, length, content hash) of every file in `dir`.
pub fn digest(dir: &Path) -> Result<BTreeMap<String, (u32, u64, u64)>, String> {
    let mut out = BTreeMap::new();
    for n in dir_names(dir)? {
        let p = dir.join(&n);
        let md = fs::symlink_metadata(&p).map_err(|e| format!("stat {n}: {e}"))?;
        let bytes = if md.file_type().is_symlink() {
            fs::read_link(&p).map_err(|e| format!("readlink {n}: {e}"))?.into_os_string().into_encoded_bytes()
        } else {
            fs::read(&p).map_err(|e| format!("read {n}: {e}"))?
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        out.insert(n, (md.mode(), md.len(), h.finish()));
    }
    Ok(out)
}

/// A successful dump's image: directory 0700, every file 0600.
pub fn expect_private(dir: &Path) -> Result<(), String> {
    let mode = fs::metadata(dir).map_err(|e| e.to_string())?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        return Err(format!("image directory has mode {mode:o}, expected 700"));
    }
    let names = dir_names(dir)?;
    for f in ["pages.img", "tree.img", "inventory.img"] {
        if !names.iter().any(|n| n == f) {
            return Err(format!("the image lacks {f}: {names:?}"));
        }
    }
    for n in names {
        let md = fs::symlink_metadata(dir.join(&n)).map_err(|e| e.to_string())?;
        if !md.file_type().is_file() || md.mode() & 0o7777 != 0o600 {
            return Err(format!("image file {n}: {:?} mode {:o}, expected a regular file 600", md.file_type(), md.mode() & 0o7777));
        }
    }
    Ok(())
}

/// Exit status 1 and `want` on stderr.
pub fn expect_failure(o: &StasisOutcome, want: &str) -> Result<(), String> {
    if o.status.code() != Some(1) || !o.stderr.contains(want) {
        return Err(format!(
            "expected exit status 1 and {want:?} on stderr; got {} with stderr {:?}",
            o.status,
            o.stderr.trim_end()
        ));
    }
    Ok(())
}

pub fn expect_fault(o: &StasisOutcome, point: &str) -> Result<(), String> {
    expect_failure(o, &format!("injected fault at {point}"))
}

/// After a failed dump: the retry. With `kill`, a killing dump, restore
/// and PASS of the restored tree; otherwise a `--leave-running` dump, PASS
/// of the original, restore and PASS again.
pub fn retry_dump(run: &mut Run, pid: i32, tree: &BTreeSet<i32>, kill: bool) -> Result<(), String> {
    clear_dir(&run.img)?;
    if kill {
        run.dump(pid, false)?;
        expect_private(&run.img)?;
        run.wait_unshare().map_err(|e| format!("original tree still alive after the retry: {e}"))?;
        run.pids.retain(|&p| p != pid);
    } else {
        run.dump(pid, true)?;
        expect_private(&run.img)?;
        check_tree_runs(pid, tree).map_err(|e| format!("after the --leave-running retry: {e}"))?;
        return run.pass_original_then_restore(pid);
    }
    let rpid = run.restore()?;
    run.expect_pass(rpid, "restored root")?;
    run.reap(rpid, "restored root")
}
