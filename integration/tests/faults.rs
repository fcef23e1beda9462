//! Failure atomicity of the engine (issue 8, "never lose a container"),
//! on real process trees in tree mode.
//!
//! Every named fault point of the engine (`stasis_checkpoint::error`) gets
//! a test that makes the engine fail there (`STASIS_FAULT=<point>`) and
//! then checks the promise:
//!
//! * **dump** (without `--leave-running`, the harsh case): `stasis` exits 1
//!   saying "injected fault at <point>"; the original tree still has the
//!   same processes, none of its threads is traced or stopped; the image
//!   directory holds no image file; then a clean dump of the same tree
//!   succeeds and both the original (after a `--leave-running` retry) and
//!   the restored tree (after a killing retry) pass their own checks;
//! * **restore**: exits 1 with the message; no process of the new pid
//!   namespace survives; the image is byte-identical; a clean restore of it
//!   then passes.
//!
//! `after-freeze` needs a cgroup freezer (containers): its test puts the
//! tree into a freezer cgroup of its own and calls the engine in-process.
//! Then the engine is SIGKILLed: in the middle of copying 1 GiB of memory
//! (a real kill at a moment seen from outside), and at every fault point
//! (`STASIS_FAULT_SLEEP=<point>` pauses there): the tree must run on
//! untraced and pass its checks, a killed restore must leave nothing.
//! A disk that fills up mid-copy fails the dump the same harmless way.
//! Finally, a dump never overwrites or follows what is already in the
//! image directory.
//!
//! The checks are in `tests/faults/look.rs`, the SIGKILL tests in
//! `tests/faults/kill.rs`. The programs are the zdtm suite's (`zdtm/`,
//! protocol in its README) and `faults/bigmem.c`. The test process is a child subreaper, so whatever a
//! failed restore leaves behind ends up among its descendants, where the
//! tests look for it. Tests take a lock and run one at a time.
//!
//! Run: `cargo build --release`, then
//! `cargo test --release -p stasis-integration --test faults -- --test-threads=1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use stasis_checkpoint::error::{DUMP_FAULT_POINTS, RESTORE_FAULT_POINTS};
use stasis_checkpoint::freezer::Freezer;
use stasis_integration::zdtm::{
    become_subreaper, expect_no_new_processes, find_prog, live_descendants, threads_of, tree_of, Prog, Run,
};

#[path = "faults/kill.rs"]
mod kill;
#[path = "faults/look.rs"]
mod look;

use kill::{sigkill_dump_points, sigkill_mid_copy, sigkill_restore_points};
use look::{
    check_tree_runs, clear_dir, digest, dir_names, expect_failure, expect_fault, expect_no_image, retry_dump,
    status_field,
};

/// Self-checking program with `<dir>/mib` MiB of private memory.
static BIGMEM: Prog = Prog {
    name: "bigmem",
    static_link: true,
    cflags: &[],
    corruptions: &["pattern", "counter"],
    dir: "faults",
};

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults")
}

/// The tests spawn trees, adopt orphans and set environment variables for
/// in-process engine calls: one at a time, whatever --test-threads says.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    become_subreaper();
    g
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `body` on a fresh [`Run`]; on error, panics with the run's report
/// (steps, logs, stasis output, processes) after cleaning up.
fn with_run(prog: &'static Prog, label: &str, body: impl FnOnce(&mut Run) -> Result<(), String>) {
    let mut run = Run::new(prog, label, "", &work_dir());
    if let Err(e) = body(&mut run) {
        let report = run.report(&e);
        drop(run);
        panic!("{report}");
    }
}

// ---------------------------------------------------------------------------
// Dump fault points

fn dump_fault_run(run: &mut Run, point: &str, kill_retry: bool) -> Result<(), String> {
    let pid = run.start()?;
    let tree = tree_of(pid);
    let args = run.dump_args(pid, false);
    let o = run.stasis_outcome("dump-fault", &strs(&args), &[("STASIS_FAULT", point)])?;
    expect_fault(&o, point)?;
    check_tree_runs(pid, &tree).map_err(|e| format!("after the failed dump: {e}"))?;
    expect_no_image(&run.img)?;
    if run.state.join("result").exists() {
        return Err("the program wrote a result during the failed dump".into());
    }
    retry_dump(run, pid, &tree, kill_retry)
}

/// pipe_data (pipe contents peeked, a child blocked in read) retried with
/// --leave-running; shm_kinds (anonymous shared, memfd, SysV) retried with
/// a killing dump.
fn dump_fault(point: &str) {
    let _g = serial();
    with_run(find_prog("pipe_data"), &format!("dump-{point}"), |run| dump_fault_run(run, point, false));
    with_run(find_prog("shm_kinds"), &format!("dump-{point}"), |run| dump_fault_run(run, point, true));
}

/// Same, with --leave-running: one tree, every point it can reach.
fn leave_running_faults(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    let tree = tree_of(pid);
    for &point in DUMP_FAULT_POINTS.iter().filter(|p| !["after-freeze", "before-kill"].contains(p)) {
        let args = run.dump_args(pid, true);
        let o = run.stasis_outcome(&format!("dump-fault-{point}"), &strs(&args), &[("STASIS_FAULT", point)])?;
        expect_fault(&o, point)?;
        check_tree_runs(pid, &tree).map_err(|e| format!("after the failed dump at {point}: {e}"))?;
        expect_no_image(&run.img)?;
    }
    retry_dump(run, pid, &tree, false)
}

// ---------------------------------------------------------------------------
// Freezer (container) dumps, in-process

/// A freezer cgroup of our own (v1 `freezer` if mounted, else v2), removed
/// on drop after moving its processes back to the root.
struct Cgroup {
    freezer: Freezer,
}

impl Cgroup {
    fn new() -> Result<Cgroup, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("stasis-faults-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = |fstype: &str, opt: Option<&str>| {
            mounts.lines().find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let mnt = pre.split_whitespace().nth(4)?;
                let mut f = post.split_whitespace();
                let ok = f.next()? == fstype && opt.is_none_or(|o| f.nth(1).is_some_and(|x| x.split(',').any(|y| y == o)));
                ok.then(|| PathBuf::from(mnt))
            })
        };
        let freezer = if let Some(m) = mount("cgroup", Some("freezer")) {
            Freezer::V1(m.join(name))
        } else if let Some(m) = mount("cgroup2", None) {
            Freezer::V2(m.join(name))
        } else {
            return Err("no cgroup freezer mounted".into());
        };
        fs::create_dir(freezer.dir()).map_err(|e| format!("mkdir {}: {e}", freezer.dir().display()))?;
        Ok(Cgroup { freezer })
    }

    fn add(&self, pid: i32) -> Result<(), String> {
        fs::write(self.freezer.dir().join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("move {pid} into {}: {e}", self.freezer.dir().display()))
    }

    fn frozen(&self) -> bool {
        self.freezer.is_frozen().unwrap_or(false)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.freezer.thaw();
        let dir = self.freezer.dir();
        let parent = dir.parent().expect("cgroup has a parent").join("cgroup.procs");
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs.split_whitespace() {
            let _ = fs::write(&parent, p);
        }
        let _ = fs::remove_dir(dir);
    }
}

/// `stasis_checkpoint::dump` (killing mode) of `pid` with `STASIS_FAULT=point`.
fn engine_dump(pid: i32, img: &Path, freezer: &Freezer, point: &str) -> stasis_checkpoint::Result<()> {
    let opts = stasis_checkpoint::DumpOptions {
        image_dir: img.to_path_buf(),
        leave_running: false,
        own_ipc_ns: false,
        copy_threads: 2,
        freezer: Some(freezer.clone()),
        pre_copy: false,
        pre_dump: false,
        parent: None,
        frozen_hook: None,
    };
    std::env::set_var("STASIS_FAULT", point);
    let r = stasis_checkpoint::dump(pid, &opts).map(drop);
    std::env::remove_var("STASIS_FAULT");
    r
}

/// Puts a fresh tree of `prog` into its own freezer cgroup, then fails an
/// in-process dump at each of `points`, with the cgroup thawed and (when
/// `paused`) frozen beforehand: afterwards the cgroup is as it was, the
/// tree untraced; finally a retry through the CLI works.
fn freezer_faults(run: &mut Run, points: &[&str]) -> Result<(), String> {
    let pid = run.start()?;
    let tree = tree_of(pid);
    let cg = Cgroup::new()?;
    for &p in &tree {
        cg.add(p)?;
    }
    for &point in points {
        for paused in [false, true] {
            let what = format!("fault at {point} ({})", if paused { "paused container" } else { "running container" });
            if paused {
                cg.freezer.freeze().map_err(|e| format!("freeze: {e}"))?;
            }
            run.step(format!("in-process dump, {what}"));
            match engine_dump(pid, &run.img, &cg.freezer, point) {
                Err(stasis_checkpoint::Error::Fault(p)) if p == point => {}
                other => return Err(format!("{what}: expected the injected fault, got {other:?}")),
            }
            if cg.frozen() != paused {
                return Err(format!("{what}: the cgroup is {}frozen afterwards", if paused { "not " } else { "" }));
            }
            if paused {
                // Stopped by the freezer, but nobody may trace them.
                for &p in &tree {
                    for t in threads_of(p) {
                        let tracer = status_field(&format!("/proc/{p}/task/{t}/status"), "TracerPid");
                        if tracer.as_deref() != Some("0") {
                            return Err(format!("{what}: thread {t} traced ({tracer:?})"));
                        }
                    }
                }
                cg.freezer.thaw().map_err(|e| format!("thaw: {e}"))?;
            }
            check_tree_runs(pid, &tree).map_err(|e| format!("{what}: {e}"))?;
            expect_no_image(&run.img)?;
        }
    }
    drop(cg);
    retry_dump(run, pid, &tree, true)
}

/// A real error half-way through seizing a frozen cgroup (a process in it
/// outside the tree, as an exec session would be): the dump fails naming
/// it and leaves the tree thawed and untraced.
fn freezer_foreign_process(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    let tree = tree_of(pid);
    let cg = Cgroup::new()?;
    for &p in &tree {
        cg.add(p)?;
    }
    let mut stranger = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .map_err(|e| format!("spawn sleep: {e}"))?;
    let spid = stranger.id() as i32;
    let r = (|| {
        cg.add(spid)?;
        run.step(format!("in-process dump with a foreign process {spid} in the cgroup"));
        match engine_dump(pid, &run.img, &cg.freezer, "") {
            Err(stasis_checkpoint::Error::Unsupported { pid: p, .. }) if p == spid => {}
            other => return Err(format!("expected the foreign process to be refused, got {other:?}")),
        }
        if cg.frozen() {
            return Err("the cgroup is left frozen".into());
        }
        check_tree_runs(pid, &tree).map_err(|e| format!("after the refused dump: {e}"))?;
        expect_no_image(&run.img)
    })();
    // A frozen v1 task does not die of SIGKILL until thawed.
    let _ = cg.freezer.thaw();
    let _ = stranger.kill();
    let _ = stranger.wait();
    r?;
    drop(cg);
    retry_dump(run, pid, &tree, true)
}

// ---------------------------------------------------------------------------
// Restore fault points

fn restore_fault_run(run: &mut Run, point: &str) -> Result<(), String> {
    let pid = run.start()?;
    run.dump(pid, false)?;
    run.wait_unshare()?;
    run.pids.retain(|&p| p != pid);
    let image = digest(&run.img)?;
    let before = live_descendants();
    let args = run.restore_args();
    let o = run.stasis_outcome("restore-fault", &strs(&args), &[("STASIS_FAULT", point)])?;
    if let Ok(pid) = o.stdout.trim().parse::<i32>() {
        run.pids.push(pid); // restored after all: cleanup kills it
    }
    expect_fault(&o, point)?;
    if !o.stdout.trim().is_empty() {
        return Err(format!("the failed restore printed a pid: {:?}", o.stdout));
    }
    expect_no_new_processes(run, &before, Duration::from_secs(3)).map_err(|e| format!("after the failed restore: {e}"))?;
    if digest(&run.img)? != image {
        return Err("the failed restore changed the image".into());
    }
    let rpid = run.restore()?;
    run.expect_pass(rpid, "restored root")?;
    run.reap(rpid, "restored root")
}

fn restore_fault(point: &str) {
    let _g = serial();
    for prog in ["pipe_data", "shm_kinds"] {
        with_run(find_prog(prog), &format!("restore-{point}"), |run| restore_fault_run(run, point));
    }
}

// ---------------------------------------------------------------------------
// A disk that fills up

/// A small filesystem mounted on `dir` for as long as it lives: a tmpfs,
/// or ext4 on a loop device backed by a file (removed with the mount).
struct SmallDisk {
    dir: PathBuf,
    backing: Option<PathBuf>,
}

fn run_cmd(what: &str, cmd: &mut std::process::Command) -> Result<(), String> {
    let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{what}: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(())
}

impl SmallDisk {
    fn mount(dir: &Path, mib: u32) -> Result<SmallDisk, String> {
        run_cmd(
            &format!("mount a {mib} MiB tmpfs"),
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
                .arg(dir),
        )?;
        Ok(SmallDisk { dir: dir.to_path_buf(), backing: None })
    }

    fn mount_ext4(dir: &Path, mib: u32) -> Result<SmallDisk, String> {
        let backing = dir.with_extension("ext4");
        let file = fs::File::create(&backing).map_err(|e| format!("create {}: {e}", backing.display()))?;
        file.set_len(u64::from(mib) << 20).map_err(|e| e.to_string())?;
        // The guard removes the backing file if mkfs or mount fails.
        let disk = SmallDisk { dir: dir.to_path_buf(), backing: Some(backing.clone()) };
        run_cmd("mkfs.ext4", std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&backing))?;
        run_cmd(
            &format!("mount a {mib} MiB ext4"),
            std::process::Command::new("mount").args(["-o", "loop"]).arg(&backing).arg(dir),
        )?;
        fs::remove_dir(dir.join("lost+found")).map_err(|e| format!("remove lost+found: {e}"))?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(|e| e.to_string())?;
        Ok(disk)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).output();
        if let Some(b) = &self.backing {
            let _ = fs::remove_file(b);
        }
    }
}

/// The image does not fit on the disk (64 MiB of memory, 16 MiB of
/// disk): the dump fails saying `want`, removes what it wrote, and the tree
/// runs on untouched; with room again, a retry works. On tmpfs the disk
/// fills up in the middle of the page copy; on ext4 pages.img's blocks are
/// allocated before any page is copied, and that fails.
fn full_disk(run: &mut Run, ext4: bool, want: &str) -> Result<(), String> {
    fs::write(run.state.join("mib"), "64").map_err(|e| e.to_string())?;
    let pid = run.start()?;
    let tree = tree_of(pid);
    {
        let _disk = if ext4 { SmallDisk::mount_ext4(&run.img, 16)? } else { SmallDisk::mount(&run.img, 16)? };
        let args = run.dump_args(pid, false);
        let o = run.stasis_outcome("dump-full", &strs(&args), &[])?;
        expect_failure(&o, want)?;
        check_tree_runs(pid, &tree).map_err(|e| format!("after the failed dump: {e}"))?;
        expect_no_image(&run.img)?;
    }
    if run.state.join("result").exists() {
        return Err("the program wrote a result during the failed dump".into());
    }
    retry_dump(run, pid, &tree, true)
}

// ---------------------------------------------------------------------------
// Existing files and planted links in the image directory

/// A dump into a directory holding an image file (or a link in its place)
/// fails naming it, changes nothing there, and the tree runs on.
fn refuse_existing(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    let tree = tree_of(pid);
    let victim = run.dir.join("victim");
    for name in ["pages.img", "tree.img", "inventory.img"] {
        for planted in ["file", "link", "dangling link"] {
            clear_dir(&run.img)?;
            fs::write(&victim, b"victim").map_err(|e| e.to_string())?;
            let target = run.img.join(name);
            let want = match planted {
                "file" => {
                    fs::write(&target, b"precious").map_err(|e| e.to_string())?;
                    format!("{name}: already exists (refusing to overwrite)")
                }
                "link" => {
                    std::os::unix::fs::symlink(&victim, &target).map_err(|e| e.to_string())?;
                    format!("{name}: is a symbolic link (refused)")
                }
                _ => {
                    std::os::unix::fs::symlink(run.dir.join("nowhere"), &target).map_err(|e| e.to_string())?;
                    format!("{name}: is a symbolic link (refused)")
                }
            };
            let before = digest(&run.img)?;
            let args = run.dump_args(pid, false);
            let o = run.stasis_outcome(&format!("dump-{name}-{}", planted.replace(' ', "-")), &strs(&args), &[])?;
            expect_failure(&o, &want).map_err(|e| format!("{planted} as {name}: {e}"))?;
            check_tree_runs(pid, &tree).map_err(|e| format!("{planted} as {name}: {e}"))?;
            let after_names = dir_names(&run.img)?;
            if after_names != [name] {
                return Err(format!("{planted} as {name}: the directory now holds {after_names:?}"));
            }
            if planted == "file" && digest(&run.img)? != before {
                return Err(format!("{planted} as {name}: it was modified"));
            }
            let md = fs::symlink_metadata(&target).map_err(|e| e.to_string())?;
            if planted != "file" && !md.file_type().is_symlink() {
                return Err(format!("{planted} as {name}: the link was replaced"));
            }
            if fs::read(&victim).map_err(|e| e.to_string())? != b"victim" || run.dir.join("nowhere").exists() {
                return Err(format!("{planted} as {name}: the dump wrote through the link"));
            }
        }
    }
    clear_dir(&run.img)?;
    retry_dump(run, pid, &tree, true)
}

// ---------------------------------------------------------------------------
// The tests

macro_rules! fault_tests {
    (dump: $($d:ident => $dn:literal),* ; restore: $($r:ident => $rn:literal),* $(;)?) => {
        const DUMP_TESTED: &[&str] = &[$($dn),*];
        const RESTORE_TESTED: &[&str] = &[$($rn),*];
        mod dump {
            $( #[test] fn $d() { super::dump_fault($dn) } )*
        }
        mod restore {
            $( #[test] fn $r() { super::restore_fault($rn) } )*
        }
    };
}

fault_tests!(
    dump:
        after_seize => "after-seize",
        mid_fd => "mid-fd",
        mid_dump => "mid-dump",
        mid_memory => "mid-memory",
        write_image => "write-image",
        before_kill => "before-kill";
    restore:
        after_namespaces => "after-namespaces",
        mid_tree => "mid-tree",
        mid_memory => "mid-memory",
        before_resume => "before-resume";
);

/// Every fault point the engine lists has its test here.
#[test]
fn every_fault_point_is_tested() {
    let mut dump: Vec<&str> = DUMP_TESTED.iter().copied().chain(["after-freeze"]).collect();
    dump.sort_unstable();
    let mut listed = DUMP_FAULT_POINTS.to_vec();
    listed.sort_unstable();
    assert_eq!(dump, listed, "dump fault points and their tests differ");
    let mut restore = RESTORE_TESTED.to_vec();
    restore.sort_unstable();
    let mut listed = RESTORE_FAULT_POINTS.to_vec();
    listed.sort_unstable();
    assert_eq!(restore, listed, "restore fault points and their tests differ");
}

/// `after-freeze` (containers only): in-process dumps of a tree in a
/// freezer cgroup, running and paused.
#[test]
fn dump_after_freeze() {
    let _g = serial();
    with_run(find_prog("pipe_data"), "freeze-after-freeze", |run| freezer_faults(run, &["after-freeze"]));
}

/// Every other dump point with a freezer too: the cgroup is thawed (or
/// stays frozen when it was) and the tree untraced.
#[test]
fn freezer_dump_faults() {
    let _g = serial();
    let points: Vec<&str> = DUMP_FAULT_POINTS.iter().copied().filter(|&p| p != "after-freeze").collect();
    with_run(find_prog("pipe_data"), "freeze-all", |run| freezer_faults(run, &points));
}

#[test]
fn freezer_dump_refuses_foreign_process() {
    let _g = serial();
    with_run(find_prog("pipe_data"), "freeze-foreign", freezer_foreign_process);
}

#[test]
fn leave_running_dump_faults() {
    let _g = serial();
    with_run(find_prog("pipe_data"), "lr-faults", leave_running_faults);
}

#[test]
fn sigkill_dump_mid_copy() {
    let _g = serial();
    with_run(&BIGMEM, "sigkill-copy", sigkill_mid_copy);
}

#[test]
fn dump_to_full_disk() {
    let _g = serial();
    with_run(&BIGMEM, "full-disk", |run| full_disk(run, false, "write pages.img: No space left on device"));
}

#[test]
fn dump_to_full_ext4_disk() {
    let _g = serial();
    with_run(&BIGMEM, "full-ext4", |run| full_disk(run, true, "bytes for pages.img: No space left on device"));
}

#[test]
fn sigkill_dump_at_every_point() {
    let _g = serial();
    with_run(find_prog("threads_tls"), "sigkill-dump", sigkill_dump_points);
}

#[test]
fn sigkill_restore_at_every_point() {
    let _g = serial();
    with_run(find_prog("pipe_data"), "sigkill-restore", sigkill_restore_points);
}

/// file_locks dumped with --leave-running: while the original still holds
/// its locks, restoring the image fails, naming a lock, and starts nothing;
/// once the original has ended, the restore takes them all again.
fn lock_held_elsewhere(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    run.dump(pid, true)?;
    let image = digest(&run.img)?;
    let before = live_descendants();
    let args = run.restore_args();
    let o = run.stasis_outcome("restore-locked", &strs(&args), &[])?;
    if let Ok(pid) = o.stdout.trim().parse::<i32>() {
        run.pids.push(pid);
    }
    expect_failure(&o, "lock on fd")?;
    expect_failure(&o, "again (is it held elsewhere?): Resource temporarily unavailable")?;
    expect_no_new_processes(run, &before, Duration::from_secs(3)).map_err(|e| format!("after the failed restore: {e}"))?;
    if digest(&run.img)? != image {
        return Err("the failed restore changed the image".into());
    }
    run.pass_original_then_restore(pid)
}

#[test]
fn a_restore_refuses_a_lock_held_elsewhere() {
    let _g = serial();
    with_run(find_prog("file_locks"), "locked", lock_held_elsewhere);
}

#[test]
fn dump_refuses_existing_files_and_links() {
    let _g = serial();
    with_run(find_prog("static_loop"), "existing", refuse_existing);
}

/// bigmem's checks can fail (its corruptions are detected), natively.
#[test]
fn bigmem_self_check() {
    let _g = serial();
    for kind in ["", "pattern", "counter"] {
        with_run(&BIGMEM, &format!("bigmem-self{kind}"), |run| {
            fs::write(run.state.join("mib"), "64").map_err(|e| e.to_string())?;
            if !kind.is_empty() {
                fs::write(run.state.join("corrupt"), format!("{kind}\n")).map_err(|e| e.to_string())?;
            }
            let pid = run.start()?;
            let text = run.finish(pid, "program")?;
            run.reap(pid, "program")?;
            match (kind, text.as_str()) {
                ("", "PASS\n") => Ok(()),
                (k, t) if !k.is_empty() && t.starts_with("FAIL: ") => Ok(()),
                (k, t) => Err(format!("corruption {k:?}: result {t:?}")),
            }
        });
    }
}
