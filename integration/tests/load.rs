//! Many checkpoints and restores, and concurrent ones: a second checkpoint
//! or restore of a container while one runs is refused without touching it
//! (the per-container lock, `runtime-spec/src/oplock.rs`), and 20 cycles in
//! a row plus 4 at once leave no fd, mount, cgroup, process or stasis file
//! behind.

#[allow(dead_code)]
mod cr;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Stdio};
use std::time::{Duration, Instant};

use cr::*;
use stasis_integration::{unique_id, Bundle, Runtime, TempDir};

/// A stasis command paused at a fault point; killed if the test fails
/// before it is waited for. The stderr reader is kept: a restored
/// container keeps that pipe.
struct Paused(Child, #[allow(dead_code)] BufReader<ChildStderr>);

impl Drop for Paused {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `rt args…` with `STASIS_FAULT_SLEEP=point` and returns once it
/// says it is pausing there (it holds its lock for the 5 s pause).
#[track_caller]
fn spawn_paused(rt: &Runtime, args: &[std::ffi::OsString], point: &str) -> Paused {
    let mut child = rt
        .command(args)
        .env("STASIS_FAULT_SLEEP", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stasis");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let want = format!("stasis: pausing at {point}");
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        match err.read_line(&mut line) {
            Ok(n) if n > 0 && line.contains(&want) => return Paused(child, err),
            Ok(n) if n > 0 => seen.push_str(&line),
            r => {
                let st = child.wait();
                panic!("no {want:?} before stderr closed ({r:?}, {st:?}): {seen}");
            }
        }
    }
}

/// stasis' lock files of container `id` (under any state root).
fn lock_files(id: &str) -> Vec<PathBuf> {
    let Ok(roots) = fs::read_dir("/run/stasis") else {
        return Vec::new();
    };
    roots
        .flatten()
        .map(|r| r.path().join(format!("{id}:lock")))
        .filter(|p| p.exists())
        .collect()
}

#[track_caller]
fn assert_refused(out: &stasis_integration::Outcome, holder: &str, id: &str) {
    assert_eq!(out.code, 1, "{out:?}");
    let want = format!("{holder} of container {id} is already in progress");
    assert!(out.stderr.contains(&want), "want {want:?}: {out:?}");
}

#[test]
fn a_second_checkpoint_or_restore_of_a_container_is_refused() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        counter_bundle(),
        TempDir::new("stasis-lock"),
    );
    let id = unique_id("lk");
    let _guard = rt.adopt(&id);
    let run = run_counter(&rt, &bundle, &id);
    let pid = rt.state(&id)["pid"].clone();
    let (image, other) = (dir.path().join("img"), dir.path().join("other"));

    // A checkpoint paused with the tree seized holds the lock …
    let args = argv(&[&"checkpoint", &"--image-path", &image, &id]);
    let mut first = spawn_paused(&rt, &args, "after-seize");
    // … so a second one, and a restore of the id, are refused untouched.
    let second = rt.exec(&argv(&[
        &"checkpoint",
        &"--leave-running",
        &"--image-path",
        &other,
        &id,
    ]));
    assert_refused(&second, "checkpoint", &id);
    assert!(!other.exists(), "the refused checkpoint made its image dir");
    let st = rt.state(&id);
    assert_eq!((&st["status"], &st["pid"]), (&"running".into(), &pid));
    let r = restore(&rt, &image, &bundle, &id, &[]);
    assert_refused(
        &stasis_integration::Outcome {
            code: r.code,
            stdout: String::new(),
            stderr: r.stderr.clone(),
        },
        "checkpoint",
        &id,
    );
    // The first one is not disturbed.
    let status = first.0.wait().unwrap();
    assert!(status.success(), "first checkpoint: {status}");
    assert!(image.join("inventory.img").is_file());
    assert_eq!(lock_files(&id), Vec::<PathBuf>::new(), "lock file left");
    let at = progress(&bundle).expect("state");
    drop(run);

    // A restore paused mid-memory holds the lock in turn.
    let args = restore_argv(&image, &bundle, &id, &[]);
    let mut first = spawn_paused(&rt, &args, "mid-memory");
    let second = rt.exec(&args);
    assert_refused(&second, "restore", &id);
    let ck = rt.exec(&argv(&[&"checkpoint", &"--image-path", &other, &id]));
    assert_refused(&ck, "restore", &id);
    assert!(!other.exists());
    let status = first.0.wait().unwrap();
    assert!(status.success(), "first restore: {status}");
    // The container was never damaged: the counter goes on, as pid 1.
    let later = wait_beyond(&bundle, at.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0), "{later:?} after {at:?}");
    assert_eq!(rt.state(&id)["status"], "running");
    assert_eq!(lock_files(&id), Vec::<PathBuf>::new(), "lock file left");

    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
    assert_eq!(lock_files(&id), Vec::<PathBuf>::new());
}

/// What a checkpoint/restore cycle could leak, counted host-wide (and our
/// own fds).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    fds: usize,
    mounts: usize,
    cgroups: usize,
    /// cmdlines of counters, `runc init`s and restore stubs.
    procs: Vec<String>,
    run_stasis: Vec<PathBuf>,
}

fn count_dirs(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

fn all_entries(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all_entries(&e.path(), out);
        }
    }
}

fn snapshot() -> Snapshot {
    let mut procs = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        if entry
            .file_name()
            .to_str()
            .is_none_or(|s| s.parse::<u32>().is_err())
        {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let cmd = cmd.trim();
        let argv0 = cmd.split(' ').next().unwrap_or("");
        if argv0 == "/bin/counter"
            || cmd.contains("restore-stub")
            || (argv0.ends_with("runc") && cmd.contains(" init"))
        {
            procs.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    procs.sort();
    let mut run_stasis = Vec::new();
    all_entries(Path::new("/run/stasis"), &mut run_stasis);
    run_stasis.sort();
    Snapshot {
        fds: fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .count(),
        mounts: fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .count(),
        cgroups: count_dirs(Path::new("/sys/fs/cgroup/freezer"))
            + count_dirs(Path::new("/sys/fs/cgroup/unified")),
        procs,
        run_stasis,
    }
}

/// Waits (up to 10 s) for everything counted to be back to `before`.
#[track_caller]
fn assert_back_to(before: &Snapshot) {
    let start = Instant::now();
    loop {
        let now = snapshot();
        if now == *before {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left behind:\nbefore {before:#?}\nafter {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run, checkpoint, restore, check, delete one counter container in
/// `bundle` (which is reused: its state file is reset first).
fn cycle(rt: &Runtime, bundle: &Bundle, dir: &Path) {
    let _ = fs::remove_file(bundle.rootfs().join("tmp/state"));
    let id = unique_id("ld");
    let _guard = rt.adopt(&id);
    let run = run_counter(rt, bundle, &id);
    let image = dir.join(&id);
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id]))
        .ok();
    drop(run);
    let at = progress(bundle).expect("state");
    let restored = restore(rt, &image, bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore {id}: {}", restored.stderr);
    let later = wait_beyond(bundle, at.iter + 2);
    assert_eq!(
        (later.pid, later.errors),
        (1, 0),
        "{id}: {later:?} after {at:?}"
    );
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    // Not `assert_gone`: runc's `list` fails when another container's
    // directory goes while it lists (the other cycles delete theirs).
    let st = rt.exec(&["state", &id]);
    assert!(
        st.code == 1 && st.stderr.contains("does not exist"),
        "{st:?}"
    );
    assert_no_processes_left(bundle, &id);
    assert_eq!(
        private_dirs(&id),
        Vec::<PathBuf>::new(),
        "{id}: stasis directory left"
    );
    assert_eq!(
        lock_files(&id),
        Vec::<PathBuf>::new(),
        "{id}: lock file left"
    );
    drop(restored);
    fs::remove_dir_all(&image).unwrap();
}

#[test]
fn twenty_in_a_row_and_four_at_once_leave_nothing_behind() {
    let rt = Runtime::stasis();
    let dir = TempDir::new("stasis-load");
    let bundles: Vec<Bundle> = (0..4).map(|_| counter_bundle()).collect();
    let before = snapshot();

    let t0 = Instant::now();
    for _ in 0..20 {
        cycle(&rt, &bundles[0], dir.path());
    }
    let serial = t0.elapsed();
    assert_back_to(&before);

    let t0 = Instant::now();
    std::thread::scope(|s| {
        for b in &bundles {
            let (rt, dir) = (&rt, dir.path());
            s.spawn(move || cycle(rt, b, dir));
        }
    });
    let parallel = t0.elapsed();
    assert_back_to(&before);
    eprintln!("20 cycles in a row: {serial:?}; 4 at once: {parallel:?}");
}
