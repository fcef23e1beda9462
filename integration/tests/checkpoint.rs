//! `stasis checkpoint` / `stasis restore` on real containers running the
//! counter workload, which checks its own memory every iteration and
//! reports `iter=N pid=P errors=E` in /tmp/state and on stdout.

mod cr;

use std::fs;
use std::path::Path;
use std::process::Stdio;

use cr::*;
use stasis_integration::{unique_id, Runtime, TempDir};

/// The files a checkpoint leaves in its image and work dirs.
#[track_caller]
fn assert_checkpoint_files(image: &Path, work: &Path) {
    for f in ["inventory.img", "pages.img", "tree.img", "descriptors.json"] {
        assert!(
            image.join(f).is_file(),
            "{f} missing in {}",
            image.display()
        );
    }
    let fds: Vec<String> =
        serde_json::from_slice(&fs::read(image.join("descriptors.json")).unwrap()).unwrap();
    assert!(fds.len() == 3 && fds[1].starts_with("pipe:["), "{fds:?}");
    let log = fs::read_to_string(work.join("dump.log")).expect("dump.log");
    assert!(log.contains("dumped 1 processes"), "{log}");
    let stats = fs::read(work.join("stats-dump")).expect("stats-dump");
    assert_eq!(
        stats[..8],
        [0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57],
        "CRIU stats magics"
    );
    assert_eq!(stats[12], 0x0a, "stats_entry.dump");
}

#[test]
fn checkpoint_and_restore_a_running_container() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        counter_bundle(),
        TempDir::new("stasis-ckpt"),
    );
    let id = unique_id("cr-run");
    let _guard = rt.adopt(&id);
    let mut run = run_counter(&rt, &bundle, &id);
    assert!(Progress::parse(&run.line()).is_some_and(|p| p.pid == 1));
    let (image, work) = (dir.path().join("img"), dir.path().join("work"));

    let args = argv(&[
        &"checkpoint",
        &"--image-path",
        &image,
        &"--work-path",
        &work,
        &"--file-locks",
        &id,
    ]);
    rt.exec(&args).ok();
    let at = progress(&bundle).expect("state");
    assert_checkpoint_files(&image, &work);
    let st = rt.exec(&["state", &id]);
    assert!(
        st.code == 1 && st.stderr.contains("container does not exist"),
        "{st:?}"
    );
    assert_gone(&rt, &id, &bundle);
    assert_eq!(
        progress(&bundle),
        Some(at),
        "the counter ran on after the checkpoint"
    );

    // Restored with fresh stdout: the counter goes on from where it was,
    // as pid 1, its memory intact, writing to the new pipe.
    let mut restored = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let first = Progress::parse(&restored.line()).expect("a counter line");
    assert!(
        first.iter == at.iter || first.iter == at.iter + 1,
        "{first:?} after {at:?}"
    );
    assert_eq!((first.pid, first.errors), (1, 0));
    let later = wait_beyond(&bundle, at.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0));
    assert!(image.join("restore.log").is_file() && image.join("stats-restore").is_file());
    let st = rt.state(&id);
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert_eq!(processes_in(&bundle.rootfs()), vec![pid]);
    assert_eq!(private_dirs(&id).len(), 1);

    // exec, kill, delete work on it; then nothing is left.
    let exec = rt.exec(&["exec", &id, "cat", "/tmp/state"]).ok();
    assert!(
        Progress::parse(&exec.stdout).is_some_and(|p| p.iter > at.iter && p.pid == 1),
        "{exec:?}"
    );
    // A restored container checkpoints again.
    let again = dir.path().join("again");
    rt.exec(&argv(&[
        &"checkpoint",
        &"--leave-running",
        &"--image-path",
        &again,
        &id,
    ]))
    .ok();
    assert!(again.join("inventory.img").is_file());
    let log = fs::read_to_string(again.join("dump.log")).expect("dump.log");
    assert!(log.contains("bytes while the container ran: frozen"), "{log}");
    assert_eq!(rt.state(&id)["pid"], st["pid"]);
    wait_beyond(&bundle, progress(&bundle).unwrap().iter);
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
    drop(run);
}

#[test]
fn leave_running_keeps_it_running_and_the_image_restores_twice() {
    let rt = Runtime::stasis();
    let (b0, b1, b2) = (counter_bundle(), counter_bundle(), counter_bundle());
    let dir = TempDir::new("stasis-ckpt");
    let (id0, id1, id2) = (unique_id("cr-lr"), unique_id("cr-lr"), unique_id("cr-lr"));
    let _guards = [rt.adopt(&id0), rt.adopt(&id1), rt.adopt(&id2)];
    let _run = run_counter(&rt, &b0, &id0);
    let pid0 = rt.state(&id0)["pid"].clone();

    // The default image path is $CWD/checkpoint.
    let out = rt
        .command(&["checkpoint", "--leave-running", "--leave-running", &id0])
        .current_dir(dir.path())
        .output();
    assert!(out.unwrap().status.success());
    let image = dir.path().join("checkpoint");
    assert!(image.join("inventory.img").is_file());
    let st = rt.state(&id0);
    assert_eq!((&st["status"], &st["pid"]), (&"running".into(), &pid0));
    let at = progress(&b0).unwrap();
    wait_beyond(&b0, at.iter + 2);

    // The same image, twice at once, under new ids and other bundles.
    let pid_file = dir.path().join("r1.pid");
    let mut r1 = restore(
        &rt,
        &image,
        &b1,
        &id1,
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    let mut r2 = restore(&rt, &image, &b2, &id2, &[]);
    assert_eq!((r1.code, r2.code), (0, 0), "{} / {}", r1.stderr, r2.stderr);
    for r in [&mut r1, &mut r2] {
        let p = Progress::parse(&r.line()).expect("a counter line");
        assert!(
            p.iter >= at.iter && p.iter <= at.iter + 2 && p.pid == 1 && p.errors == 0,
            "{p:?} vs {at:?}"
        );
    }
    let (p1, p2) = (wait_beyond(&b1, at.iter + 2), wait_beyond(&b2, at.iter + 2));
    assert_eq!((p1.errors, p2.errors, p1.pid, p2.pid), (0, 0, 1, 1));
    let (s1, s2) = (rt.state(&id1), rt.state(&id2));
    assert_ne!(s1["pid"], s2["pid"]);
    let written = fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(written, s1["pid"].to_string());
    for (id, b) in [(&id1, &b1), (&id2, &b2)] {
        rt.exec(&["delete", "--force", id.as_str()]).ok();
        assert_gone(&rt, id, b);
    }
    assert_eq!(rt.state(&id0)["status"], "running");
}

#[test]
fn a_paused_container_stays_paused_or_is_checkpointed_away() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        counter_bundle(),
        TempDir::new("stasis-ckpt"),
    );
    let id = unique_id("cr-pause");
    let _guard = rt.adopt(&id);
    let _run = run_counter(&rt, &bundle, &id);
    rt.exec(&["pause", &id]).ok();
    let lr = dir.path().join("lr");
    rt.exec(&argv(&[
        &"checkpoint",
        &"--leave-running",
        &"--image-path",
        &lr,
        &id,
    ]))
    .ok();
    assert_eq!(
        rt.state(&id)["status"],
        "paused",
        "leave-running keeps a paused container paused"
    );
    assert_still(&bundle);
    rt.exec(&["resume", &id]).ok();
    let at = wait_beyond(&bundle, progress(&bundle).unwrap().iter);

    rt.exec(&["pause", &id]).ok();
    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id]))
        .ok();
    assert_gone(&rt, &id, &bundle);
    let mut r = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(rt.state(&id)["status"], "running");
    assert!(Progress::parse(&r.line()).is_some_and(|p| p.iter >= at.iter && p.errors == 0));
    wait_beyond(&bundle, at.iter + 2);
}

/// A container of over 64 MiB: the killed process's memory is freed by
/// the engine alongside its exit (process_mrelease; with a v1 freezer the
/// SIGKILL is held back until the reaper is in), and the image restores
/// into a counter whose 96 MiB heap still verifies.
#[test]
fn a_large_container_is_reaped_as_it_dies_and_restores_whole() {
    let (rt, dir) = (Runtime::stasis(), TempDir::new("stasis-ckpt"));
    let bundle = stasis_integration::Bundle::busybox(&["/bin/counter", "/tmp/state", "96"]);
    stasis_integration::build_counter(&bundle.rootfs().join("bin/counter"));
    let id = unique_id("cr-large");
    let _guard = rt.adopt(&id);
    let _run = run_counter(&rt, &bundle, &id);
    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id]))
        .ok();
    assert_gone(&rt, &id, &bundle);
    let log = fs::read_to_string(image.join("dump.log")).expect("dump.log");
    assert!(log.contains("dumped 1 processes, 1 threads, 10"), "{log}");
    if Path::new("/sys/fs/cgroup/freezer/cgroup.procs").exists() {
        assert!(
            log.contains("freed the memory of 1 large process(es) alongside their exit"),
            "{log}"
        );
    }
    let at = progress(&bundle).expect("state");
    let mut r = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = Progress::parse(&r.line()).expect("a counter line");
    assert_eq!((first.pid, first.errors), (1, 0), "{first:?}");
    let later = wait_beyond(&bundle, at.iter + 2);
    assert_eq!((later.pid, later.errors), (1, 0));
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
}

#[test]
fn refused_and_failed_checkpoints_leave_the_container_alone() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        counter_bundle(),
        TempDir::new("stasis-ckpt"),
    );
    let id = unique_id("cr-refuse");
    let _guard = rt.adopt(&id);
    let _run = run_counter(&rt, &bundle, &id);
    let pid = rt.state(&id)["pid"].clone();
    let image = dir.path().join("img");
    let log = dir.path().join("log.json");
    let refused: &[(&str, &str)] = &[
        ("--lazy-pages", "--lazy-pages is not supported"),
        ("--parent-path=/abs", "--parent-path must be relative"),
        ("--parent-path=../missing", "invalid --parent-path"),
        (
            "--page-server=127.0.0.1:1",
            "--page-server is not supported",
        ),
        ("--auto-dedup", "--auto-dedup is not supported"),
    ];
    for (flag, msg) in refused {
        let mut args = argv(&[
            &"--log",
            &log,
            &"--log-format",
            &"json",
            &"checkpoint",
            &"--image-path",
            &image,
        ]);
        args.extend([flag.into(), id.as_str().into()]);
        let out = rt.exec(&args);
        assert_eq!(out.code, 1, "{flag}: {out:?}");
        assert!(out.stderr.contains(msg), "{flag}: {out:?}");
        let last = fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string();
        let line: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert!(
            line["level"] == "error" && line["msg"].as_str().unwrap().contains(msg),
            "{last}"
        );
        assert!(!image.exists(), "{flag} created the image dir");
        let st = rt.state(&id);
        assert_eq!((&st["status"], &st["pid"]), (&"running".into(), &pid));
    }

    // An engine failure half-way: running on, untouched, error in dump.log.
    let mut cmd = rt.command(&argv(&[&"checkpoint", &"--image-path", &image, &id]));
    let out = cmd.env("STASIS_FAULT", "mid-memory").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("injected fault at mid-memory"),
        "{out:?}"
    );
    assert!(fs::read_to_string(image.join("dump.log"))
        .unwrap()
        .contains("injected fault"));
    assert!(!image.join("inventory.img").exists());
    let st = rt.state(&id);
    assert_eq!((&st["status"], &st["pid"]), (&"running".into(), &pid));
    let p = wait_beyond(&bundle, progress(&bundle).unwrap().iter + 2);
    assert_eq!((p.pid, p.errors), (1, 0));

    // Wrong states and missing containers, with runc's messages.
    let missing = rt.exec(&[
        "checkpoint",
        "--image-path",
        "/nonexistent/x",
        "no-such-container",
    ]);
    assert!(
        missing.code == 1 && missing.stderr.contains("container does not exist"),
        "{missing:?}"
    );
    let created = unique_id("cr-created");
    let _g2 = rt.adopt(&created);
    // Not `exec`: the created container holds stdout/stderr open.
    let mut create = rt.command(&argv(&[&"create", &"--bundle", &bundle.path(), &created]));
    assert!(create
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success());
    let out = rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &created]));
    assert!(
        out.stderr
            .contains("Container cannot be checkpointed in created state"),
        "{out:?}"
    );
}

#[test]
fn failed_restores_leave_nothing_behind() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        counter_bundle(),
        TempDir::new("stasis-ckpt"),
    );
    let id = unique_id("cr-fail");
    let _guard = rt.adopt(&id);
    let _run = run_counter(&rt, &bundle, &id);
    let image = dir.path().join("img");
    rt.exec(&argv(&[
        &"checkpoint",
        &"--leave-running",
        &"--image-path",
        &image,
        &id,
    ]))
    .ok();

    // Restoring onto an existing id is refused; the container is untouched.
    let pid = rt.state(&id)["pid"].clone();
    let r = restore(&rt, &image, &bundle, &id, &[]);
    assert!(
        r.code == 1 && r.stderr.contains("already exists"),
        "{}",
        r.stderr
    );
    assert_eq!(
        (
            rt.state(&id)["status"].clone(),
            rt.state(&id)["pid"].clone()
        ),
        ("running".into(), pid)
    );

    // Engine failures at each restore stage: no container, no process, no state.
    let other = counter_bundle();
    for fault in ["mid-tree", "mid-memory", "before-resume"] {
        let new = unique_id("cr-fail");
        let _g = rt.adopt(&new);
        let args = argv(&[
            &"restore",
            &"-d",
            &"--image-path",
            &image,
            &"--bundle",
            &other.path(),
            &new,
        ]);
        let r = detached_env(&rt, &args, &[("STASIS_FAULT", fault)]);
        assert_eq!(r.code, 1, "{fault}");
        assert!(
            r.stderr.contains(&format!("injected fault at {fault}")),
            "{fault}: {}",
            r.stderr
        );
        assert_gone(&rt, &new, &other);
    }
    // A missing image is refused before anything is created.
    let new = unique_id("cr-fail");
    let r = restore(&rt, &dir.path().join("nothing"), &other, &new, &[]);
    assert!(
        r.code == 1 && r.stderr.contains("inventory.img"),
        "{}",
        r.stderr
    );
    assert_gone(&rt, &new, &other);
}

#[test]
fn a_foreground_restore_exits_with_the_container() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        counter_bundle(),
        TempDir::new("stasis-ckpt"),
    );
    let id = unique_id("cr-fg");
    let _guard = rt.adopt(&id);
    let _run = run_counter(&rt, &bundle, &id);
    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id]))
        .ok();
    let at = progress(&bundle).unwrap();

    let mut child = rt
        .command(&argv(&[
            &"restore",
            &"--image-path",
            &image,
            &"--bundle",
            &bundle.path(),
            &id,
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_beyond(&bundle, at.iter + 1);
    assert_eq!(rt.state(&id)["status"], "running");
    // (SIGTERM would be forwarded, but a pid-namespace init without a
    // handler ignores it, as under `runc run`.)
    rt.exec(&["kill", &id, "KILL"]).ok();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the foreground restore did not exit with its container");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 9));
    assert_gone(&rt, &id, &bundle);
}

#[test]
fn pre_dumps_then_an_incremental_checkpoint_restore_the_container() {
    let (rt, bundle, dir) = (Runtime::stasis(), counter_bundle(), TempDir::new("stasis-ckpt"));
    let id = unique_id("cr-pre");
    let _guard = rt.adopt(&id);
    let run = run_counter(&rt, &bundle, &id);
    let (p1, p2, fin) = (dir.path().join("p1"), dir.path().join("p2"), dir.path().join("final"));

    // Two pre-dumps: memory only, the container keeps running.
    rt.exec(&argv(&[&"checkpoint", &"--pre-dump", &"--image-path", &p1, &id])).ok();
    assert!(p1.join("inventory.img").is_file() && !p1.join("tree.img").exists());
    assert_eq!(rt.state(&id)["status"], "running");
    rt.exec(&argv(&[&"checkpoint", &"--pre-dump", &"--parent-path", &"../p1", &"--image-path", &p2, &id])).ok();
    assert_eq!(rt.state(&id)["status"], "running");
    let before = progress(&bundle).expect("state");
    wait_beyond(&bundle, before.iter + 2);

    // The final checkpoint stores only what changed since p2.
    rt.exec(&argv(&[&"checkpoint", &"--parent-path", &"../p2", &"--image-path", &fin, &id])).ok();
    let at = progress(&bundle).expect("state");
    let size = |d: &std::path::Path| fs::metadata(d.join("pages.img")).unwrap().len();
    assert!(size(&fin) < size(&p1), "the incremental image ({}) should be smaller than the first ({})", size(&fin), size(&p1));
    assert_gone(&rt, &id, &bundle);
    drop(run);

    // Restored through the chain final -> p2 -> p1.
    let mut restored = restore(&rt, &fin, &bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let first = Progress::parse(&restored.line()).expect("a counter line");
    assert_eq!((first.pid, first.errors), (1, 0));
    assert!(first.iter >= at.iter, "{first:?} after {at:?}");
    let later = wait_beyond(&bundle, at.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0));
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
}

/// An event loop (epoll over a periodic timerfd, an edge-triggered eventfd,
/// a signalfd and a Unix socket pair; `workloads/evloop.c`) checkpoints and
/// restores: the image holds these descriptors, the restored loop goes on
/// ticking with its eventfd count, byte sequence and watches intact (it
/// counts any mismatch as an error), its signalfd receives a signal sent
/// after the restore, and it checkpoints again while running.
#[test]
fn an_event_loop_keeps_its_timer_watches_and_signalfd() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        stasis_integration::Bundle::busybox(&["/bin/evloop"]),
        TempDir::new("stasis-evloop"),
    );
    stasis_integration::build_workload("evloop", &bundle.rootfs().join("bin/evloop"));
    let id = unique_id("cr-ev");
    let _guard = rt.adopt(&id);
    let run = run_counter(&rt, &bundle, &id);
    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id])).ok();
    let at = progress(&bundle).expect("state");
    assert_gone(&rt, &id, &bundle);
    let shown = rt.exec(&argv(&[&"inspect", &image])).ok().stdout;
    for kind in ["epoll (fd ", "timerfd (clock 1,", "eventfd (count", "signalfd (mask 0x800)", "unix stream socket pair"] {
        assert!(shown.contains(kind), "no {kind:?} in:\n{shown}");
    }

    let mut restored = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let first = Progress::parse(&restored.line()).expect("a state line");
    assert!(first.iter >= at.iter, "{first:?} after {at:?}");
    let sigs = || fs::read_to_string(bundle.rootfs().join("tmp/state")).unwrap_or_default();
    let later = wait_beyond(&bundle, at.iter + 30);
    assert_eq!((later.pid, later.errors), (1, 0), "{}", sigs());
    assert!(sigs().contains("sigs=0"), "{}", sigs());
    rt.exec(&["kill", &id, "USR2"]).ok();
    let start = std::time::Instant::now();
    while !sigs().contains("sigs=1") {
        assert!(start.elapsed() < WAIT, "SIGUSR2 not read from the signalfd: {}", sigs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Once more, leaving it running: it goes on without an error.
    let again = dir.path().join("again");
    rt.exec(&argv(&[&"checkpoint", &"--leave-running", &"--image-path", &again, &id])).ok();
    let after = wait_beyond(&bundle, progress(&bundle).unwrap().iter + 30);
    assert_eq!((after.pid, after.errors), (1, 0), "{}", sigs());
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
    drop(run);
}

/// The life both workload tests below check, for a container `id` of
/// `bundle` running a workload that reports like the counter: a
/// checkpoint whose image `inspect` shows each of `shown`, a restore after
/// which it goes on without an error as pid 1, a leave-running checkpoint
/// after which it goes on again, then kill and delete, nothing left.
fn checkpoint_restore_and_go_on(rt: &Runtime, bundle: &stasis_integration::Bundle, dir: &TempDir, id: &str, shown: &[&str]) {
    let run = run_counter(rt, bundle, id);
    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id])).ok();
    let at = progress(bundle).expect("state");
    assert_eq!(at.errors, 0);
    assert_gone(rt, id, bundle);
    let text = rt.exec(&argv(&[&"inspect", &image])).ok().stdout;
    for line in shown {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }

    let restored = restore(rt, &image, bundle, id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let later = wait_beyond(bundle, at.iter + 10);
    assert_eq!((later.pid, later.errors), (1, 0), "after the restore");

    let again = dir.path().join("again");
    rt.exec(&argv(&[&"checkpoint", &"--leave-running", &"--image-path", &again, &id])).ok();
    let after = wait_beyond(bundle, progress(bundle).unwrap().iter + 10);
    assert_eq!((after.pid, after.errors), (1, 0), "after a leave-running checkpoint");
    rt.exec(&["kill", id, "KILL"]).ok();
    rt.wait_status(id, "stopped", WAIT);
    rt.exec(&["delete", id]).ok();
    assert_gone(rt, id, bundle);
    drop((run, restored));
}

/// A container's SysV semaphore sets and message queue (its own IPC
/// namespace; `workloads/sysvipc.c` checks ids, values, modes and messages
/// every iteration) come back with their ids and contents, after a
/// checkpoint and after a leave-running one.
#[test]
fn a_container_keeps_its_sysv_semaphores_and_message_queue() {
    let (rt, bundle, dir) = (
        Runtime::stasis(),
        stasis_integration::Bundle::busybox(&["/bin/sysvipc"]),
        TempDir::new("stasis-sysvipc"),
    );
    stasis_integration::build_workload("sysvipc", &bundle.rootfs().join("bin/sysvipc"));
    let id = unique_id("cr-ipc");
    let _guard = rt.adopt(&id);
    let shown = ["(key 0x5354, mode 640): values [1, 42, 7]", "(key 0x0, mode 600): values [3]", "(key 0x4d53, mode 600): 3 messages, 1011 of 8192 bytes"];
    checkpoint_restore_and_go_on(&rt, &bundle, &dir, &id, &shown);
}

/// A named network namespace with loopback up, as podman, CRI-O or CNI
/// give a container before runc creates or restores it; removed on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> NetNs {
        let name = unique_id("stasis-net");
        let ip = |args: &[&str]| std::process::Command::new("ip").args(args).status().expect("run ip").success();
        assert!(ip(&["netns", "add", &name]), "ip netns add {name}");
        let ns = NetNs(name);
        assert!(ip(&["-n", &ns.0, "link", "set", "lo", "up"]), "bring lo up in {}", ns.0);
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Two processes of a container talking over loopback TCP
/// (`workloads/tcploop.c`: 64 KiB blocks checked both ways) go on over
/// the same connection after a checkpoint and restore into the container's
/// network namespace, and after a leave-running checkpoint.
#[test]
fn a_tcp_connection_inside_a_container_goes_on_after_restore() {
    let (rt, dir, netns) = (Runtime::stasis(), TempDir::new("stasis-tcp"), NetNs::new());
    let bundle = stasis_integration::Bundle::busybox(&["/bin/tcploop"]);
    stasis_integration::build_workload("tcploop", &bundle.rootfs().join("bin/tcploop"));
    let path = netns.path();
    bundle.edit_config(|c| {
        let list = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
        list.retain(|n| n["type"] != "network");
        list.push(serde_json::json!({ "type": "network", "path": path }));
    });
    let id = unique_id("cr-tcp");
    let _guard = rt.adopt(&id);
    let shown = ["tcp connection 127.0.0.1:7000 -> 127.0.0.1:", "-> 127.0.0.1:7000 (", "tcp socket listening on 127.0.0.1:7000"];
    checkpoint_restore_and_go_on(&rt, &bundle, &dir, &id, &shown);
}

/// Brings up loopback in the network namespace of `pid` (runc leaves it
/// down; CNI would configure it) and fetches `/` from port 8080 there: the
/// body of a 200 answer.
fn fetch_from(pid: i32) -> Option<String> {
    let ns = format!("--net=/proc/{pid}/ns/net");
    let up = std::process::Command::new("nsenter").args([&ns, "ip", "link", "set", "lo", "up"]).status().ok()?;
    assert!(up.success(), "ip link set lo up in the container");
    // bash's /dev/tcp: the host's static busybox wget crashes resolving.
    let get = "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 2 cat <&3";
    let out = std::process::Command::new("nsenter").args([&ns, "bash", "-c", get]).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    (out.status.success() && text.starts_with("HTTP/1.1 200")).then_some(body)
}

#[track_caller]
fn wait_fetch(pid: i32) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(page) = fetch_from(pid) {
            return page;
        }
        assert!(start.elapsed() < WAIT, "no answer from the web server in the container");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A web server (busybox httpd, listening on [::]:8080) checkpoints
/// with its listening socket and answers again from the restored container,
/// in that container's new network namespace.
#[test]
fn a_listening_web_server_answers_after_restore() {
    let (rt, dir) = (Runtime::stasis(), TempDir::new("stasis-httpd"));
    let bundle = stasis_integration::Bundle::busybox(&["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let page = format!("page {}\n", unique_id("www"));
    fs::create_dir_all(bundle.rootfs().join("www")).unwrap();
    fs::write(bundle.rootfs().join("www/index.html"), &page).unwrap();
    let id = unique_id("cr-www");
    let _guard = rt.adopt(&id);
    let run = detached(&rt, &argv(&[&"run", &"-d", &"--bundle", &bundle.path(), &id]));
    assert_eq!(run.code, 0, "run: {}", run.stderr);
    let pid = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    assert_eq!(wait_fetch(pid), page);

    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id])).ok();
    assert_gone(&rt, &id, &bundle);
    let shown = rt.exec(&argv(&[&"inspect", &image])).ok().stdout;
    assert!(shown.contains("tcp socket listening on [::]:8080"), "{shown}");

    let restored = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let pid2 = rt.state(&id)["pid"].as_i64().unwrap() as i32;
    assert_eq!(wait_fetch(pid2), page);
    assert_eq!(processes_in(&bundle.rootfs()), vec![pid2]);
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
    drop((run, restored));
}
