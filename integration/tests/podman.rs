//! Real podman (Debian's 4.3, with conmon) driving stasis through
//! `podman --runtime <stasis>`: run, checkpoint with and without
//! `--leave-running`, restore in place, export to an archive and import it
//! (under a new name and under the old one), `--print-stats`, and rm.
//!
//! The workload is the counter (`integration/workloads/counter.c`) in a
//! busybox image made offline: it checks its 4 MiB heap pattern every
//! iteration and reports `iter=N pid=P errors=E` in /tmp/state and on
//! stdout (podman's log). After every restore it must go on from where it
//! was checkpointed, as pid 1, with no errors, writing to conmon's new pipe.
//! Files the container wrote into (or deleted from) its rootfs must travel
//! in the exported archive (podman's rootfs-diff.tar and deleted.files).

#[allow(dead_code)] // the counter helpers this test does not use
mod cr;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cr::{counter_bundle, Progress};
use serde_json::Value;
use stasis_integration::podman::Podman;
use stasis_integration::{stasis_bin, unique_id, TempDir};

const PODMAN_WAIT: Duration = Duration::from_secs(30);

/// The counter's state file, read through `podman exec` (running only).
fn progress(p: &Podman, name: &str) -> Option<Progress> {
    let out = p.exec(&["exec", name, "cat", "/tmp/state"]);
    (out.code == 0).then(|| Progress::parse(&out.stdout)).flatten()
}

/// The counter lines in the container's log (its stdout), in order.
#[track_caller]
fn logged(p: &Podman, name: &str) -> Vec<Progress> {
    let out = p.exec(&["logs", name]).ok();
    out.stdout.lines().filter_map(Progress::parse).collect()
}

/// Waits until the counter is past `iter`; it must be pid 1 without errors.
#[track_caller]
fn wait_beyond(p: &Podman, name: &str, iter: u64) -> Progress {
    let start = Instant::now();
    loop {
        if let Some(now) = progress(p, name).filter(|now| now.iter > iter) {
            assert_eq!((now.pid, now.errors), (1, 0), "{name}: {now:?}");
            return now;
        }
        assert!(
            start.elapsed() < PODMAN_WAIT,
            "{name}: counter not past {iter}: {:?}",
            progress(p, name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A restored counter resumes where the checkpoint at `from` left it: the
/// iterations logged on its stdout (podman's log, carried over) go on one
/// by one with no gap and no repeat, past `from`, as pid 1 without errors:
/// its memory is intact and its new stdout pipe works.
#[track_caller]
fn assert_resumed(p: &Podman, name: &str, from: u64) {
    wait_beyond(p, name, from + 2);
    let lines = logged(p, name);
    assert!(lines.iter().all(|l| l.pid == 1 && l.errors == 0), "{name}: {lines:?}");
    let iters: Vec<u64> = lines.iter().map(|l| l.iter).collect();
    assert!(iters.first().is_some_and(|&f| f <= from), "{name}: {iters:?}");
    assert!(iters.last().is_some_and(|&l| l > from + 2), "{name}: {iters:?}");
    assert!(iters.windows(2).all(|w| w[1] == w[0] + 1), "{name}: not consecutive: {iters:?}");
}

/// Host pid of the container's init (0 when not running).
fn host_pid(p: &Podman, name: &str) -> i64 {
    p.inspect(name)["State"]["Pid"].as_i64().unwrap_or(0)
}

fn state(p: &Podman, name: &str) -> String {
    p.inspect(name)["State"]["Status"].as_str().unwrap_or("").to_string()
}

/// The last counter line logged, once the container has stopped.
#[track_caller]
fn last_logged(p: &Podman, name: &str) -> Progress {
    *logged(p, name).last().expect("counter lines in the log")
}

/// Whether host process `pid` is a counter (ours, not yet gone).
fn is_counter(pid: i64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"/bin/counter"))
}

/// `--print-stats` output: the runtime's figures (CRIU's stats format,
/// which stasis writes) must be there.
#[track_caller]
fn assert_stats(out: &str, key: &str, field: &str) {
    let start = out.find('{').unwrap_or_else(|| panic!("no JSON in {out:?}"));
    let v: Value = serde_json::from_str(&out[start..]).expect("parse --print-stats");
    let s = &v["container_statistics"][0]["criu_statistics"];
    assert!(v["container_statistics"][0][key].as_u64().is_some_and(|d| d > 0), "{v}");
    assert!(s[field].as_u64().is_some_and(|n| n > 0), "{v}");
}

/// Names in a tar archive (uncompressed), or in a tar inside it.
fn tar_list(archive: &Path, member: Option<&str>) -> Vec<String> {
    let script = match member {
        None => "tar -tf \"$0\"".to_string(),
        Some(m) => format!("tar -xOf \"$0\" {m} | tar -tf -"),
    };
    let out = Command::new("sh").arg("-c").arg(script).arg(archive).output().unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_start_matches("./").to_string()).collect()
}

#[test]
fn podman_checkpoint_restore_export_import() {
    let p = Podman::new();
    let image = format!("localhost/stasis-counter:{}", unique_id("t"));
    let rootfs = counter_bundle();
    p.import_rootfs(&rootfs.rootfs(), &image);
    let dir = TempDir::new("stasis-podman-archives");
    let name = unique_id("podman-c");
    let stasis = stasis_bin();
    let stasis = stasis.to_str().unwrap();

    // run -d: the container is bound to stasis.
    let out = p.exec(&["--runtime", stasis, "run", "-d", "--name", &name, "--network", "none", &image, "/bin/counter"]);
    assert_eq!(out.code, 0, "podman run: {out:?}");
    let id = out.stdout.trim().to_string();
    assert_eq!(p.inspect(&name)["OCIRuntime"], stasis);
    wait_beyond(&p, &name, 2);
    let pid0 = host_pid(&p, &name);
    assert!(is_counter(pid0));

    // checkpoint --leave-running, twice (the second one replaces the
    // first image in podman's checkpoint dir): it runs on, same process.
    for _ in 0..2 {
        let out = p.exec(&["container", "checkpoint", "--leave-running", "--print-stats", &name]).ok();
        assert_stats(&out.stdout, "runtime_checkpoint_duration", "pages_written");
        assert_eq!((state(&p, &name), host_pid(&p, &name)), ("running".into(), pid0));
        let now = progress(&p, &name).expect("state");
        wait_beyond(&p, &name, now.iter);
    }

    // checkpoint (stops it), then restore in place; podman passes these
    // CRIU options on to the runtime, which accepts them.
    p.exec(&["container", "checkpoint", "--tcp-established", "--file-locks", &name]).ok();
    assert_eq!(state(&p, &name), "exited");
    assert!(p.inspect(&name)["State"]["Checkpointed"] == true);
    assert!(!is_counter(pid0), "the checkpointed counter still runs");
    let at = last_logged(&p, &name);
    let out = p.exec(&["container", "restore", "--print-stats", "--tcp-established", "--file-locks", &name]).ok();
    assert_stats(&out.stdout, "runtime_restore_duration", "pages_restored");
    assert_eq!(state(&p, &name), "running");
    assert_resumed(&p, &name, at.iter);
    // podman's view of the processes: the counter alone, as pid 1.
    let top = p.exec(&["top", &name, "pid", "args"]).ok();
    let procs: Vec<&str> = top.stdout.lines().skip(1).map(str::trim).collect();
    assert!(procs.len() == 1 && procs[0].starts_with("1 ") && procs[0].ends_with("/bin/counter"), "{top:?}");

    // Rootfs changes: a file written, one deleted.
    p.exec(&["exec", &name, "sh", "-c", "echo marker > /root/marker && rm /etc/group"]).ok();

    // Export while it runs, uncompressed, to look inside; then export
    // (podman's default zstd), which stops it.
    let plain = dir.path().join("plain.tar");
    p.exec(&["container", "checkpoint", "-R", "--compress", "none", "-e", plain.to_str().unwrap(), &name]).ok();
    let names = tar_list(&plain, None);
    for f in [
        "checkpoint/inventory.img",
        "checkpoint/tree.img",
        "checkpoint/pages.img",
        "checkpoint/descriptors.json",
        "stats-dump",
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} not in the export: {names:?}");
    }
    assert!(tar_list(&plain, Some("rootfs-diff.tar")).iter().any(|n| n == "root/marker"));
    let archive = dir.path().join("c.tar.zst");
    p.exec(&["container", "checkpoint", "-e", archive.to_str().unwrap(), &name]).ok();
    assert_eq!(state(&p, &name), "exited");
    let at = last_logged(&p, &name);

    // Import under a new name while the original still exists, then, with
    // the original removed, under its own name: both resume from the
    // archive, with the rootfs changes, still bound to stasis.
    let copy = unique_id("podman-i");
    let out = p.exec(&["container", "restore", "--import", archive.to_str().unwrap(), "--name", &copy, "--print-stats"]).ok();
    assert_stats(&out.stdout, "runtime_restore_duration", "pages_restored");
    p.exec(&["rm", &name]).ok();
    p.exec(&["container", "restore", "--import", archive.to_str().unwrap()]).ok();
    let mut ids = vec![id];
    for n in [&copy, &name] {
        let c = p.inspect(n);
        assert_eq!(c["State"]["Status"], "running", "{n}");
        assert_eq!(c["OCIRuntime"], stasis);
        ids.push(c["Id"].as_str().unwrap().to_string());
        assert_resumed(&p, n, at.iter);
        let files = p.exec(&["exec", n, "sh", "-c", "cat /root/marker; ls /etc"]).ok();
        assert!(files.stdout.starts_with("marker\n"), "{n}: {files:?}");
        assert!(!files.stdout.contains("group"), "{n}: deleted file is back: {files:?}");
    }
    let pids = [host_pid(&p, &copy), host_pid(&p, &name)];

    // rm leaves nothing: no container, process, runc state or stasis dir.
    p.exec(&["rm", "--force", "--time", "0", &copy, &name]).ok();
    assert_eq!(p.exec(&["ps", "-aq"]).ok().stdout.trim(), "");
    for pid in pids {
        assert!(!is_counter(pid), "counter {pid} still runs");
    }
    for id in &ids {
        assert!(!Path::new("/run/runc").join(id).exists(), "runc state of {id} left");
        assert_eq!(cr::private_dirs(id), Vec::<std::path::PathBuf>::new(), "stasis dir of {id} left");
    }
}

/// A restore that fails (its image lacks pages.img) leaves the container
/// checkpointed, with no process, runc state or stasis directory, and the
/// image untouched: once the file is back, a retry resumes the counter.
#[test]
fn podman_failed_restore_loses_nothing() {
    let p = Podman::new();
    let image = format!("localhost/stasis-counter:{}", unique_id("t"));
    let rootfs = counter_bundle();
    p.import_rootfs(&rootfs.rootfs(), &image);
    let name = unique_id("podman-f");
    let stasis = stasis_bin();
    let stasis = stasis.to_str().unwrap();
    let out = p.exec(&["--runtime", stasis, "run", "-d", "--name", &name, "--network", "none", &image, "/bin/counter"]);
    assert_eq!(out.code, 0, "podman run: {out:?}");
    let id = out.stdout.trim().to_string();
    wait_beyond(&p, &name, 2);
    p.exec(&["container", "checkpoint", &name]).ok();
    let at = last_logged(&p, &name);

    let userdata = std::path::PathBuf::from(p.inspect(&name)["StaticDir"].as_str().unwrap());
    let pages = userdata.join("checkpoint/pages.img");
    let aside = userdata.join("pages.img.aside");
    std::fs::rename(&pages, &aside).unwrap();
    let failed = p.exec(&["container", "restore", &name]);
    assert!(failed.code != 0 && failed.stderr.contains("pages.img: open: No such file"), "{failed:?}");
    // The cause is said once (not repeated by the error chain).
    assert_eq!(failed.stderr.matches("No such file or directory").count(), 1, "{failed:?}");
    assert_eq!(state(&p, &name), "exited");
    assert!(!Path::new("/run/runc").join(&id).exists(), "runc state left");
    assert_eq!(cr::private_dirs(&id), Vec::<std::path::PathBuf>::new(), "stasis dir left");
    assert!(userdata.join("checkpoint/inventory.img").is_file(), "the image was changed");

    std::fs::rename(&aside, &pages).unwrap();
    p.exec(&["container", "restore", &name]).ok();
    assert_resumed(&p, &name, at.iter);
    p.exec(&["rm", "--force", "--time", "0", &name]).ok();
    assert!(!Path::new("/run/runc").join(&id).exists(), "runc state left");
    assert_eq!(cr::private_dirs(&id), Vec::<std::path::PathBuf>::new(), "stasis dir left");
}
