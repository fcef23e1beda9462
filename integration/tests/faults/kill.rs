//! SIGKILL of the engine: mid-copy (seen from outside) and paused at every
//! fault point (`STASIS_FAULT_SLEEP`). The tree runs on untraced; a killed
//! restore leaves nothing and changes nothing.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::thread::sleep;
use std::time::{Duration, Instant};

use stasis_checkpoint::error::{DUMP_FAULT_POINTS, RESTORE_FAULT_POINTS};
use stasis_integration::zdtm::{expect_no_new_processes, kill, live_descendants, read_lossy, tree_of, Run};

use super::look::{check_tree_runs, clear_dir, digest, dir_names, expect_failure, expect_incomplete, tree_traced_by};
use super::strs;


/// Waits until `<label>.stderr` says the engine paused at `point`.
pub fn wait_paused(run: &mut Run, label: &str, child: &mut std::process::Child, point: &str) -> Result<(), String> {
    let err = run.dir.join(format!("{label}.stderr"));
    let want = format!("stasis: pausing at {point}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_lossy(&err).contains(&want) {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("stasis ended ({st}) before pausing at {point}: {}", read_lossy(&err)));
        }
        if Instant::now() > deadline {
            return Err(format!("stasis did not pause at {point}"));
        }
        sleep(Duration::from_millis(5));
    }
    Ok(())
}

pub fn sigkill(run: &mut Run, child: &mut std::process::Child, what: &str) -> Result<(), String> {
    kill(child.id() as i32, libc::SIGKILL).map_err(|e| format!("kill stasis: {e}"))?;
    let st = child.wait().map_err(|e| e.to_string())?;
    run.step(format!("SIGKILLed stasis {what}: {st}"));
    use std::os::unix::process::ExitStatusExt;
    if st.signal() != Some(libc::SIGKILL) {
        return Err(format!("stasis {what} ended with {st} before the SIGKILL"));
    }
    Ok(())
}

/// A killed dump's leftovers are refused by restore, which starts nothing.
pub fn expect_refused(run: &mut Run, label: &str, want: &str) -> Result<(), String> {
    let before = live_descendants();
    let args = run.restore_args();
    let o = run.stasis_outcome(label, &strs(&args), &[])?;
    if let Ok(pid) = o.stdout.trim().parse::<i32>() {
        run.pids.push(pid);
    }
    expect_failure(&o, want)?;
    expect_no_new_processes(run, &before, Duration::from_secs(1))
}

/// 1 GiB of memory; the dump is killed once it has written 64 MiB of it.
pub fn sigkill_mid_copy(run: &mut Run) -> Result<(), String> {
    fs::write(run.state.join("mib"), "1024").map_err(|e| e.to_string())?;
    let pid = run.start()?;
    let tree = tree_of(pid);
    let args = run.dump_args(pid, false);
    let mut child = run.stasis_spawn("dump-killed", &strs(&args), &[])?;
    let pages = run.img.join("pages.img");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("the dump ended ({st}) before 64 MiB were copied: cannot kill it mid-copy"));
        }
        let written = fs::metadata(&pages).map(|m| m.blocks() * 512).unwrap_or(0);
        if written >= 64 << 20 {
            run.step(format!("pages.img has {} MiB allocated", written >> 20));
            break;
        }
        if Instant::now() > deadline {
            return Err("pages.img did not grow".into());
        }
        sleep(Duration::from_millis(1));
    }
    if !tree_traced_by(pid, child.id() as i32) {
        return Err("the tree is not held by the dump while it copies".into());
    }
    sigkill(run, &mut child, "mid-copy")?;
    check_tree_runs(pid, &tree).map_err(|e| format!("after the killed dump: {e}"))?;
    expect_incomplete(&run.img)?;
    expect_refused(run, "restore-incomplete", "inventory.img: missing")?;
    run.expect_pass(pid, "original")?;
    run.reap(pid, "original")
}

/// `STASIS_FAULT_SLEEP` at every dump point, killing and --leave-running
/// dumps; SIGKILL during the pause.
pub fn sigkill_dump_points(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    let tree = tree_of(pid);
    for leave_running in [false, true] {
        for &point in DUMP_FAULT_POINTS {
            if point == "after-freeze" || (leave_running && point == "before-kill") {
                continue;
            }
            clear_dir(&run.img)?;
            let label = format!("dump-{point}{}", if leave_running { "-lr" } else { "" });
            let args = run.dump_args(pid, leave_running);
            let mut child = run.stasis_spawn(&label, &strs(&args), &[("STASIS_FAULT_SLEEP", point)])?;
            wait_paused(run, &label, &mut child, point)?;
            sigkill(run, &mut child, &format!("paused at {point}"))?;
            check_tree_runs(pid, &tree).map_err(|e| format!("after {label} was killed: {e}"))?;
            if point == "before-kill" {
                // The image was complete; only the kill of the tree was lost.
                let names = dir_names(&run.img)?;
                if names != ["inventory.img", "pages.img", "tree.img"] {
                    return Err(format!("{label}: expected a complete image, found {names:?}"));
                }
            } else {
                expect_incomplete(&run.img)?;
            }
        }
    }
    run.expect_pass(pid, "original")?;
    run.reap(pid, "original")
}

/// `STASIS_FAULT_SLEEP` at every restore point; SIGKILL during the pause.
pub fn sigkill_restore_points(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    run.dump(pid, false)?;
    run.wait_unshare()?;
    run.pids.retain(|&p| p != pid);
    let image = digest(&run.img)?;
    for &point in RESTORE_FAULT_POINTS {
        let before = live_descendants();
        let label = format!("restore-{point}");
        let args = run.restore_args();
        let mut child = run.stasis_spawn(&label, &strs(&args), &[("STASIS_FAULT_SLEEP", point)])?;
        wait_paused(run, &label, &mut child, point)?;
        sigkill(run, &mut child, &format!("paused at {point}"))?;
        expect_no_new_processes(run, &before, Duration::from_secs(3))
            .map_err(|e| format!("{label} killed: {e}"))?;
        if digest(&run.img)? != image {
            return Err(format!("{label} changed the image"));
        }
    }
    let rpid = run.restore()?;
    run.expect_pass(rpid, "restored root")?;
    run.reap(rpid, "restored root")
}
