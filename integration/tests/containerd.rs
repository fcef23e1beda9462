//! containerd drives stasis: a private containerd 1.6 (Debian's package)
//! with its own runc v2 shim and `BinaryName` = stasis (`ctr run
//! --runc-binary`), the counter workload (`integration/workloads/counter.c`,
//! which checks its own 4 MiB heap every iteration) in a busybox image
//! built here (`stasis_integration::oci_image::counter_image`), then `ctr task checkpoint`
//! with and without `--exit`, `ctr container checkpoint --task`, and
//! `ctr container restore --live` into a new container whose counter goes
//! on from where it was, as pid 1, its memory intact. Also: a checkpoint
//! stasis refuses and a restore that fails, as ctr reports them, and
//! `examples/containerd.sh`. Every test ends by checking that the daemon
//! had nothing left to clean up itself.

#[allow(dead_code)]
mod cr;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cr::{Progress, WAIT};
use serde_json::Value;
use stasis_integration::containerd::{runtime_binary_name, Containerd, Leftovers};
use stasis_integration::oci_image::{counter_image, COUNTER_IMAGE};
use stasis_integration::{stasis_bin, workspace_root};

const CRIU_TAR: &str = "application/vnd.containerd.container.criu.checkpoint.criu.tar";

/// A private containerd with the image imported.
fn containerd() -> Containerd {
    let ctd = Containerd::start();
    ctd.import(counter_image());
    ctd
}

/// `ctr run -d --runc-binary <stasis>` of the counter, its stdout in
/// `<dir>/<id>.log`; returns the task's host pid once the counter counts.
#[track_caller]
fn run_counter(ctd: &Containerd, id: &str) -> i32 {
    run_counter_with(ctd, id, &stasis_bin(), &[])
}

/// `run_counter` with another runtime binary, and a command instead of the
/// image's (`/bin/counter`) unless `cmd` is empty.
#[track_caller]
fn run_counter_with(ctd: &Containerd, id: &str, runtime: &Path, cmd: &[&str]) -> i32 {
    let log = format!("file://{}/{id}.log", ctd.dir().display());
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    for a in [
        "run".as_ref(),
        "-d".as_ref(),
        "--runc-binary".as_ref(),
        runtime.as_os_str(),
        "--runc-root".as_ref(),
        ctd.runc_root().as_os_str(),
        "--fifo-dir".as_ref(),
        ctd.fifo_dir().as_os_str(),
        "--log-uri".as_ref(),
        std::ffi::OsStr::new(&log),
        COUNTER_IMAGE.as_ref(),
        id.as_ref(),
    ] {
        args.push(a.to_os_string());
    }
    args.extend(cmd.iter().map(|a| a.into()));
    let out = ctd.ctr(&args);
    assert_eq!(out.code, 0, "ctr run: {out:?}");
    let pid = ctd.wait_task(id, "RUNNING");
    let p = wait_beyond(pid, 2);
    assert_eq!((p.pid, p.errors), (1, 0), "{p:?}");
    pid
}

/// The counter's state file in the container of host pid `pid`.
fn progress(pid: i32) -> Option<Progress> {
    cr::progress_in(&proc_root(pid))
}

#[track_caller]
fn wait_beyond(pid: i32, iter: u64) -> Progress {
    cr::wait_beyond_in(&proc_root(pid), iter)
}

/// The root directory of process `pid`, as the host sees it.
fn proc_root(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// `ctr containers info ID`, parsed.
#[track_caller]
fn info(ctd: &Containerd, id: &str) -> Value {
    let out = ctd.ctr(&["containers", "info", id]).ok();
    serde_json::from_str(&out.stdout).expect("containers info json")
}

/// The manifests of the index image `reference` points at.
#[track_caller]
fn index_manifests(ctd: &Containerd, reference: &str) -> Vec<Value> {
    let list = ctd.ctr(&["images", "ls"]).ok();
    let digest = list
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no image {reference}: {list:?}"))
        .to_string();
    let index = ctd.ctr(&["content", "get", &digest]).ok();
    let index: Value = serde_json::from_str(&index.stdout).expect("index json");
    index["manifests"].as_array().expect("manifests").clone()
}

/// The files in the checkpoint tar (the image directory stasis wrote)
/// that the index of `reference` carries.
#[track_caller]
fn criu_tar_files(ctd: &Containerd, reference: &str) -> Vec<String> {
    let manifests = index_manifests(ctd, reference);
    let criu = manifests
        .iter()
        .find(|m| m["mediaType"] == CRIU_TAR)
        .unwrap_or_else(|| panic!("no checkpoint data in {reference}: {manifests:?}"));
    let tar = ctd.dir().join("criu.tar");
    let file = fs::File::create(&tar).unwrap();
    let st = ctd
        .ctr_command(&["content", "get", criu["digest"].as_str().unwrap()])
        .stdout(file)
        .status()
        .unwrap();
    assert!(st.success());
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(list.status.success());
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The image directory written by `checkpoint`: complete, and holding the
/// counter (read back by `stasis inspect`).
#[track_caller]
fn assert_image_dir(image: &Path) {
    for f in ["inventory.img", "tree.img", "pages.img", "descriptors.json"] {
        assert!(
            image.join(f).is_file(),
            "{f} missing in {}",
            image.display()
        );
    }
    let out = Command::new(stasis_bin())
        .arg("inspect")
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("/bin/counter"),
        "{out:?}"
    );
}

/// Nothing of container `id` is left: not in ctr, not in the runtime root,
/// no stasis directory, no counter process left.
#[track_caller]
fn assert_gone(ctd: &Containerd, id: &str, pid: i32) {
    assert_eq!(ctd.task(id), None);
    let list = ctd.ctr(&["containers", "ls", "-q"]).ok();
    assert!(!list.stdout.lines().any(|l| l == id), "{list:?}");
    // (By its state file: the pid itself may be reused by then.)
    let start = Instant::now();
    while progress(pid).is_some() && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(progress(pid), None, "the counter of pid {pid} still runs");
    let root = ctd.runc_root().join(ctd.namespace());
    let left: Vec<PathBuf> = fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "runtime state left: {left:?}");
    assert_eq!(
        cr::private_dirs(id),
        Vec::<PathBuf>::new(),
        "stasis directory left"
    );
}

/// Kill and delete task and container `id` through ctr.
#[track_caller]
fn remove(ctd: &Containerd, id: &str, pid: i32) {
    if ctd.task(id).is_some_and(|(_, s)| s != "STOPPED") {
        ctd.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]).ok();
        ctd.wait_task(id, "STOPPED");
    }
    ctd.ctr(&["tasks", "delete", id]).ok();
    ctd.ctr(&["containers", "delete", id]).ok();
    assert_gone(ctd, id, pid);
}

#[test]
fn task_checkpoint_leave_running_then_exit() {
    let ctd = containerd();
    let id = "counter";
    let pid = run_counter(&ctd, id);
    let info = info(&ctd, id);
    assert_eq!(
        runtime_binary_name(&info),
        Some(stasis_bin().display().to_string())
    );

    // Leave running (the default): ctr pauses, the shim runs `stasis
    // checkpoint --leave-running`, the daemon stores the image dir.
    let out = ctd.ctr(&["tasks", "checkpoint", id]).ok();
    let reference = out.stdout.trim().to_string();
    assert!(
        reference.starts_with("containerd.io/checkpoint/counter:"),
        "{out:?}"
    );
    let files = criu_tar_files(&ctd, &reference);
    for f in ["inventory.img", "tree.img", "pages.img", "descriptors.json"] {
        assert!(
            files.iter().any(|x| x == f),
            "{f} not in the checkpoint: {files:?}"
        );
    }
    assert_eq!(ctd.task(id), Some((pid, "RUNNING".to_string())));
    let at = progress(pid).unwrap();
    let later = wait_beyond(pid, at.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0), "{later:?}");

    // --exit with paths of our own: the files stay there, the task stops.
    let (image, work) = (ctd.dir().join("ck/img"), ctd.dir().join("ck/work"));
    ctd.ctr(&[
        "tasks".as_ref(),
        "checkpoint".as_ref(),
        "--exit".as_ref(),
        "--image-path".as_ref(),
        image.as_os_str(),
        "--work-path".as_ref(),
        work.as_os_str(),
        id.as_ref(),
    ])
    .ok();
    assert_eq!(ctd.wait_task(id, "STOPPED"), pid);
    assert_eq!(progress(pid), None, "the counter lives on");
    assert_image_dir(&image);
    let log = fs::read_to_string(work.join("dump.log")).expect("dump.log");
    assert!(
        log.contains("dumped 1 processes") && log.contains("container stopped"),
        "{log}"
    );
    // The shim's stdout pipe went to the log: the counter wrote there.
    let stdout = fs::read_to_string(ctd.dir().join(format!("{id}.log"))).unwrap();
    assert!(
        stdout.lines().filter_map(Progress::parse).count() >= 3,
        "{stdout}"
    );

    remove(&ctd, id, pid);
    assert_eq!(ctd.stop(), Leftovers::default());
}

#[test]
fn container_checkpoint_and_restore_into_a_new_container() {
    let ctd = containerd();
    let (id, copy) = ("original", "restored");
    let pid = run_counter(&ctd, id);
    let reference = "docker.io/stasis/checkpoint:original";

    let before = progress(pid).unwrap();
    ctd.ctr(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        "--image",
        id,
        reference,
    ])
    .ok();
    let after = progress(pid).unwrap();
    // containerd 1.6 drops the task part silently when its content already
    // exists: make sure this checkpoint carries it.
    let files = criu_tar_files(&ctd, reference);
    assert!(files.iter().any(|f| f == "inventory.img"), "{files:?}");
    // Left running, and still counting well past the checkpoint.
    assert_eq!(ctd.task(id), Some((pid, "RUNNING".to_string())));
    let last = wait_beyond(pid, after.iter + 30);
    // The original goes away before the restore: the restored container
    // keeps the checkpointed spec, and so the original's cgroup path.
    remove(&ctd, id, pid);

    // Restore into a new container: runtime and BinaryName come from the
    // checkpoint; the shim runs `stasis restore --detach` at task start.
    ctd.ctr(&["containers", "restore", "--live", "--rw", copy, reference])
        .ok();
    let new_pid = ctd.wait_task(copy, "RUNNING");
    assert_ne!(new_pid, pid);
    assert_eq!(
        runtime_binary_name(&info(&ctd, copy)),
        Some(stasis_bin().display().to_string())
    );
    // The counter goes on from the checkpoint (not from 0, nor from where
    // the original got to before it was removed), as pid 1, with its heap
    // (a pattern derived from the count, checked every iteration) intact.
    let first = progress(new_pid).expect("restored counter state");
    assert!(
        first.iter >= before.iter && first.iter < last.iter,
        "restored at {first:?}; checkpoint between {before:?} and {after:?}; original reached {last:?}"
    );
    assert_eq!((first.pid, first.errors), (1, 0), "{first:?}");
    let later = wait_beyond(new_pid, first.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0), "{later:?}");
    // One process in the task: the restored init.
    let ps = ctd.ctr(&["tasks", "ps", copy]).ok();
    let pids: Vec<&str> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pids, vec![new_pid.to_string()], "{ps:?}");
    // exec (delegated to runc) sees the restored state.
    let exec = ctd
        .ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "cat",
            copy,
            "cat",
            "/tmp/state",
        ])
        .ok();
    assert!(
        Progress::parse(&exec.stdout).is_some_and(|p| p.pid == 1 && p.iter > first.iter),
        "{exec:?}"
    );
    // The restored container checkpoints again (to a path: a second
    // content-store checkpoint of the same spec hits containerd 1.6's
    // "already exists").
    let again = ctd.dir().join("again");
    ctd.ctr(&[
        "tasks".as_ref(),
        "checkpoint".as_ref(),
        "--image-path".as_ref(),
        again.as_os_str(),
        copy.as_ref(),
    ])
    .ok();
    assert_image_dir(&again);
    assert_eq!(ctd.task(copy), Some((new_pid, "RUNNING".to_string())));
    wait_beyond(new_pid, progress(new_pid).unwrap().iter);

    remove(&ctd, copy, new_pid);
    assert_eq!(ctd.stop(), Leftovers::default());
}

/// A checkpoint stasis refuses (syslogd's unix socket: not saved) fails
/// through ctr with stasis' message, as the shim reports it from the
/// runtime's `--log` (and `dump.log`, copied to `<bundle>/criu-dump.log`),
/// and the task runs on untouched, not paused.
#[test]
fn a_refused_checkpoint_reports_why_and_the_task_runs_on() {
    let ctd = containerd();
    let id = "socket";
    let pid = run_counter_with(
        &ctd,
        id,
        &stasis_bin(),
        &[
            "sh",
            "-c",
            "syslogd -n -O /tmp/messages </dev/null >/dev/null 2>&1 & exec /bin/counter",
        ],
    );
    // Wait for syslogd (pid 2 in the container) to hold its socket.
    let start = Instant::now();
    while !ctd
        .ctr(&["tasks", "ps", id])
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse::<i32>().ok())
        .filter(|&p| p != pid)
        .any(|p| {
            fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
            })
        })
    {
        assert!(start.elapsed() < WAIT, "no syslogd socket in the container");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = ctd.ctr(&["tasks", "checkpoint", id]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("cannot be checkpointed") && out.stderr.contains("unix socket"),
        "{out:?}"
    );
    let dump_log = fs::read_to_string(ctd.bundle(id).join("criu-dump.log")).expect("criu-dump.log");
    assert!(dump_log.contains("cannot be checkpointed"), "{dump_log}");
    // No checkpoint image was made, and the counter goes on, unpaused.
    let images = ctd.ctr(&["images", "ls", "-q"]).ok();
    assert_eq!(images.stdout.trim(), COUNTER_IMAGE, "{images:?}");
    assert_eq!(ctd.task(id), Some((pid, "RUNNING".to_string())));
    let at = progress(pid).unwrap();
    let later = wait_beyond(pid, at.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0), "{later:?}");

    remove(&ctd, id, pid);
    assert_eq!(ctd.stop(), Leftovers::default());
}

/// `examples/containerd.sh` works: its restored shell counter goes on from
/// where it was checkpointed.
#[test]
fn the_example_script_works() {
    stasis_integration::containerd::adopt_orphans();
    let out = Command::new("bash")
        .arg(workspace_root().join("examples/containerd.sh"))
        .env("STASIS", stasis_bin())
        .stdin(Stdio::null())
        .output()
        .expect("run examples/containerd.sh");
    stasis_integration::containerd::reap_children();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let number_after = |prefix: &str| -> Vec<u64> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"));
        line.split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let before = number_after("demo counts: ")[0];
    let restored = number_after("restored demo2 counts on from the checkpoint: ");
    assert!(
        restored.len() == 2 && restored[0] >= before && restored[1] > restored[0],
        "checkpointed at {before}, restored {restored:?}: {stdout}"
    );
}

/// A restore that fails (a fault injected into stasis just before the
/// restored tree would be released) fails `ctr container restore` with
/// stasis' message; deleting the half-made task and container leaves
/// nothing behind, and a retry from the same checkpoint works.
#[test]
fn a_failed_restore_reports_why_leaves_nothing_and_can_be_retried() {
    let ctd = containerd();
    // The runtime binary: stasis, with STASIS_FAULT set from a file while
    // that file exists.
    let fault = ctd.dir().join("fault");
    let wrapper = ctd.dir().join("stasis-with-fault");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -f {f} ] && export STASIS_FAULT=\"$(cat {f})\"\nexec {bin} \"$@\"\n",
            f = fault.display(),
            bin = stasis_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let (id, copy) = ("original", "restored");
    let reference = "docker.io/stasis/checkpoint:faulty";
    let pid = run_counter_with(&ctd, id, &wrapper, &[]);
    let before = progress(pid).unwrap();
    ctd.ctr(&[
        "containers",
        "checkpoint",
        "--task",
        "--rw",
        "--image",
        id,
        reference,
    ])
    .ok();
    remove(&ctd, id, pid);

    fs::write(&fault, "before-resume").unwrap();
    let out = ctd.ctr(&["containers", "restore", "--live", "--rw", copy, reference]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("injected fault at before-resume"),
        "{out:?}"
    );
    // containerd keeps the task it could not start (CREATED, pid 0); its
    // deletion, and the container's, leave nothing. (Not `--force`: ctr
    // 1.6 would wait forever for that task to exit, with runc too.)
    assert_eq!(ctd.task(copy), Some((0, "CREATED".to_string())));
    ctd.ctr(&["tasks", "delete", copy]).ok();
    ctd.ctr(&["containers", "delete", copy]).ok();
    assert_gone(&ctd, copy, pid);

    // The checkpoint is intact: a retry restores it.
    fs::remove_file(&fault).unwrap();
    ctd.ctr(&["containers", "restore", "--live", "--rw", copy, reference])
        .ok();
    let new_pid = ctd.wait_task(copy, "RUNNING");
    let first = progress(new_pid).expect("restored counter state");
    assert!(first.iter >= before.iter, "{first:?} after {before:?}");
    let later = wait_beyond(new_pid, first.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0), "{later:?}");
    remove(&ctd, copy, new_pid);
    assert_eq!(ctd.stop(), Leftovers::default());
}
