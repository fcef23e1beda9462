//! containerd with `--runtime io.containerd.stasis.v2`: a private
//! containerd finds containerd-shim-stasis-v2 on its PATH, runs the counter
//! workload from an imported busybox image, checkpoints it with
//! `ctr task checkpoint` and `ctr container checkpoint --task`, restores it
//! into a new container that goes on counting from its in-memory state,
//! execs into it, and after kill and delete nothing is left: no shim, no
//! container process, no mount, no state entry. The private containerd,
//! the running counter and the "nothing left" check are in
//! `tests/containerd_shim/kit.rs`.

#[allow(dead_code)]
mod cr;
#[path = "containerd_shim/kit.rs"]
mod kit;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cr::{progress_in, Progress};
use stasis_integration::oci_image::COUNTER_IMAGE;
use stasis_integration::unique_id;

use kit::{
    assert_all_gone, run_counter, run_null_io, setup, shim_socket, status, wait_for, wait_status, RUNTIME, WAIT,
};

#[test]
fn run_checkpoint_restore_exec_and_delete_through_containerd() {
    let s = setup();
    let (ctrd, scratch) = (&s.ctrd, &s.scratch);
    // The event stream, read until the end of the test.
    let events = ctrd.events();

    // Run: stdout goes to a log file through the shim.
    let (c1, c2) = (unique_id("shim-a"), unique_id("shim-b"));
    let log = scratch.path().join("c1.log");
    let log_uri = format!("file://{}", log.display());
    let run = ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--log-uri",
        &log_uri,
        "--memory-limit",
        "67108864",
        COUNTER_IMAGE,
        &c1,
        "/bin/counter",
        "/tmp/state",
    ]);
    assert_eq!(run.code, 0, "ctr run: {run:?}\n{}", ctrd.log());
    let c1_pid = wait_status(ctrd, &c1, "RUNNING");
    let mut sockets = vec![shim_socket(ctrd, &c1)];
    let rootfs1 = ctrd.bundle(&c1).join("rootfs");
    let p = wait_for("the counter", || {
        progress_in(&rootfs1).filter(|p| p.iter >= 5)
    });
    assert_eq!((p.pid, p.errors), (1, 0), "{p:?}");
    let out = wait_for("counter output in the log", || {
        fs::read_to_string(&log)
            .ok()
            .filter(|l| l.lines().any(|l| Progress::parse(l).is_some()))
    });
    assert!(
        out.lines()
            .filter_map(Progress::parse)
            .all(|p| p.errors == 0),
        "{out}"
    );
    assert_eq!(ctrd.shim_pids().len(), 1, "one shim for the task");

    // `ctr task checkpoint`: an image in the content store, the task runs on.
    let ck = ctrd.ctr(&["tasks", "checkpoint", &c1]);
    assert_eq!(ck.code, 0, "ctr task checkpoint: {ck:?}\n{}", ctrd.log());
    let ck_image = ck.stdout.trim().to_string();
    assert!(ck_image.starts_with("containerd.io/checkpoint/"), "{ck:?}");
    assert!(
        ctrd.list("images").contains(&ck_image),
        "{ck_image} not among the images"
    );
    let after_task_ck = progress_in(&rootfs1).unwrap();
    wait_for("the counter after the task checkpoint", || {
        progress_in(&rootfs1).filter(|p| p.iter > after_task_ck.iter + 3)
    });
    assert_eq!(status(ctrd, &c1).unwrap(), "RUNNING");
    // containerd 1.6 refuses to store a second checkpoint whose spec blob
    // is already in its content store (the daemon's commit fails with
    // "already exists", and the client then writes an empty checkpoint
    // index): drop the first one, and its blobs, before the next.
    ctrd.ctr(&["images", "rm", "--sync", &ck_image]).ok();

    // `ctr container checkpoint --task` (pauses, checkpoints with runc's
    // options, resumes), after the counter has run a while.
    wait_for("30 iterations", || {
        progress_in(&rootfs1).filter(|p| p.iter >= 30)
    });
    let before = progress_in(&rootfs1).unwrap();
    let reference = format!("stasis.test/checkpoint/{c1}:1");
    let cck = ctrd.ctr(&["containers", "checkpoint", "--task", &c1, &reference]);
    assert_eq!(
        cck.code,
        0,
        "ctr container checkpoint: {cck:?}\n{}",
        ctrd.log()
    );
    assert_eq!(
        status(ctrd, &c1).unwrap(),
        "RUNNING",
        "resumed after the checkpoint"
    );
    let after = progress_in(&rootfs1).unwrap();
    assert!(after.iter >= before.iter);

    // The original goes away completely before the restore.
    ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &c1])
        .ok();
    wait_status(ctrd, &c1, "STOPPED");
    ctrd.ctr(&["tasks", "delete", &c1]).ok();
    ctrd.ctr(&["containers", "delete", &c1]).ok();
    assert!(
        !Path::new(&format!("/proc/{c1_pid}")).exists(),
        "c1's init {c1_pid} still exists"
    );

    // Restore into a new container: its rootfs is a fresh snapshot of the
    // image, so the first state it writes comes from the restored memory:
    // past the iteration seen before the checkpoint, where a fresh counter
    // would start at 1.
    let restore = ctrd.ctr(&["containers", "restore", "--live", &c2, &reference]);
    assert_eq!(
        restore.code,
        0,
        "ctr container restore: {restore:?}\n{}",
        ctrd.log()
    );
    let rootfs2 = ctrd.bundle(&c2).join("rootfs");
    let first = wait_for("the restored counter", || progress_in(&rootfs2));
    assert!(
        first.iter > before.iter && first.errors == 0 && first.pid == 1,
        "restored {first:?}, checkpointed between {before:?} and {after:?}"
    );
    let c2_pid = wait_status(ctrd, &c2, "RUNNING");
    sockets.push(shim_socket(ctrd, &c2));
    let xdg = ctrd.xdg_runtime_dir();
    assert_eq!(
        fs::read_dir(&xdg).unwrap().count(),
        0,
        "the checkpoint containerd unpacked for the restore is left in {}",
        xdg.display()
    );
    let later = wait_for("the restored counter to go on", || {
        progress_in(&rootfs2).filter(|p| p.iter > first.iter + 5)
    });
    assert_eq!(
        later.errors, 0,
        "the restored heap pattern is intact: {later:?}"
    );

    // Exec into it: output through the shim's FIFO copy, exit codes.
    let cat = ctrd
        .ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "cat",
            &c2,
            "cat",
            "/tmp/state",
        ])
        .ok();
    let seen = Progress::parse(cat.stdout.trim()).unwrap_or_else(|| panic!("exec output: {cat:?}"));
    assert!(seen.iter >= later.iter && seen.errors == 0, "{seen:?}");
    let exit3 = ctrd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "exit3",
        &c2,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(exit3.code, 3, "{exit3:?}");
    // The restored container keeps its 64 MiB limit, and an OOM kill in it
    // is published for it.
    let oom = ctrd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "oom",
        &c2,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ]);
    assert_eq!(oom.code, 137, "dd under the restored limit: {oom:?}");
    let oom_event = events.wait_line(WAIT, |l| l.contains("/tasks/oom") && l.contains(c2.as_str()));
    assert!(oom_event.is_some(), "no /tasks/oom event for {c2}:\n{}", events.seen());
    let ps = ctrd.ctr(&["tasks", "ps", &c2]).ok();
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&c2_pid.to_string())),
        "{ps:?}"
    );

    // Stats: runc's `events --stats`, as cgroup v1 Metrics.
    let metrics = ctrd.ctr(&["tasks", "metrics", &c2]).ok().stdout;
    let metric = |name: &str| -> Option<u64> {
        metrics.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name))
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
    };
    assert!(metric("pids.current").is_some_and(|n| n >= 1), "{metrics}");
    assert!(
        metric("memory.usage_in_bytes").is_some_and(|n| n >= 4 << 20),
        "the counter's 4 MiB heap: {metrics}"
    );

    // Pause and resume.
    ctrd.ctr(&["tasks", "pause", &c2]).ok();
    assert_eq!(status(ctrd, &c2).unwrap(), "PAUSED");
    let frozen = progress_in(&rootfs2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        progress_in(&rootfs2),
        frozen,
        "the counter moved while paused"
    );
    ctrd.ctr(&["tasks", "resume", &c2]).ok();
    assert_eq!(status(ctrd, &c2).unwrap(), "RUNNING");

    // Kill and delete: nothing is left behind.
    ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &c2])
        .ok();
    wait_status(ctrd, &c2, "STOPPED");
    ctrd.ctr(&["tasks", "delete", &c2]).ok();
    ctrd.ctr(&["containers", "delete", &c2]).ok();
    assert!(
        !Path::new(&format!("/proc/{c2_pid}")).exists(),
        "c2's init {c2_pid} still exists"
    );
    assert_all_gone(&s, &[&c1, &c2]);
    for socket in &sockets {
        assert!(!socket.exists(), "shim socket {} left", socket.display());
    }

    // The shim published what containerd expects, for both containers.
    let log = events.stop();
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/checkpointed",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        for id in [&c1, &c2] {
            let seen = log
                .lines()
                .any(|l| l.contains(topic) && l.contains(id.as_str()));
            let expected = !(topic.starts_with("/tasks/exec")
                || topic.ends_with("paused")
                || topic.ends_with("resumed"))
                || id == &c2;
            let expected = expected && !(topic == "/tasks/checkpointed" && id == &c2);
            assert!(!expected || seen, "no {topic} event for {id}:\n{log}");
        }
    }
    let ooms: Vec<&str> = log.lines().filter(|l| l.contains("/tasks/oom")).collect();
    assert!(
        !ooms.is_empty() && ooms.iter().all(|l| l.contains(c2.as_str())),
        "OOM events, all for {c2}:\n{log}"
    );
}

/// The Task API's checkpoint options and update, sent to the shim directly:
/// ctr 1.6 sends `--exit`, `--image-path` and `--work-path` only to runtime
/// types named `io.containerd.runc.*`, and has no `task update`. The shim
/// is reached the way containerd reaches it: the ttrpc address in the
/// task's bundle.
#[test]
fn checkpoint_options_exit_and_paths_and_update_via_the_task_api() {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::shim::oci::CheckpointOptions;
    use containerd_shim_protos::shim::shim::{CheckpointTaskRequest, UpdateTaskRequest};
    use containerd_shim_protos::ttrpc::context::with_timeout;
    use containerd_shim_protos::TaskClient;

    let s = setup();
    let ctrd = &s.ctrd;
    let id = unique_id("shim-c");
    let (pid, _) = run_counter(ctrd, &id, &["/bin/counter", "/tmp/state"]);

    let address =
        fs::read_to_string(ctrd.bundle(&id).join("address")).expect("the shim's address file");
    let client = containerd_shim_protos::ttrpc::Client::connect(address.trim())
        .expect("connect to the shim");
    let task = TaskClient::new(client);
    let ctx = || with_timeout(60_000_000_000);

    // Update: the memory limit reaches the container's cgroup.
    let limit: u64 = 200 << 20;
    let resources = serde_json::json!({"memory": {"limit": limit}});
    let req = UpdateTaskRequest {
        id: id.clone(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: serde_json::to_vec(&resources).unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    task.update(ctx(), &req).expect("update");
    let metrics = ctrd.ctr(&["tasks", "metrics", &id]).ok().stdout;
    assert!(
        metrics
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["memory.limit_in_bytes", &limit.to_string()]),
        "{metrics}"
    );

    // Checkpoint with exit and explicit image and work paths.
    let (img, work) = (
        s.scratch.path().join("image"),
        s.scratch.path().join("work"),
    );
    let opts = CheckpointOptions {
        exit: true,
        image_path: img.display().to_string(),
        work_path: work.display().to_string(),
        ..Default::default()
    };
    let req = CheckpointTaskRequest {
        id: id.clone(),
        path: s.scratch.path().join("unused").display().to_string(),
        options: Some(Any {
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    task.checkpoint(ctx(), &req).expect("checkpoint");
    assert!(
        img.join("inventory.img").is_file(),
        "no complete image in {}",
        img.display()
    );
    let dump_log = fs::read_to_string(work.join("dump.log")).expect("dump.log in the work path");
    assert!(dump_log.contains("dumped"), "{dump_log}");
    assert!(
        !s.scratch.path().join("unused").exists(),
        "the options' image path wins"
    );
    // Exit: the task stops (the shim reaped its init and told containerd)
    // and deletes cleanly although stasis already removed the container.
    wait_status(ctrd, &id, "STOPPED");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} survived the checkpoint"
    );
    drop(task);
    ctrd.ctr(&["tasks", "delete", &id]).ok();
    ctrd.ctr(&["containers", "delete", &id]).ok();
    assert_all_gone(&s, &[&id]);
}

/// A shim killed with SIGKILL: containerd runs `containerd-shim-stasis-v2
/// delete` in the bundle, which deletes the container from stasis (killing
/// its processes) and unmounts the rootfs; nothing is left.
#[test]
fn a_dead_shim_is_cleaned_up_by_its_delete_action() {
    let s = setup();
    let ctrd = &s.ctrd;
    let id = unique_id("shim-d");
    let (pid, _) = run_counter(ctrd, &id, &["/bin/counter", "/tmp/state"]);
    let shims = ctrd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let socket = shim_socket(ctrd, &id);
    assert!(socket.exists(), "{}", socket.display());
    // SAFETY: kill(2) on the shim this test's containerd started.
    assert_eq!(unsafe { libc::kill(shims[0], libc::SIGKILL) }, 0);
    wait_for("the container's init to die", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    wait_for("containerd to drop the task", || {
        ctrd.task(&id).is_none().then_some(())
    });
    ctrd.ctr(&["containers", "delete", &id]).ok();
    assert_all_gone(&s, &[&id]);
    assert!(
        !socket.exists(),
        "the dead shim's socket {} is left",
        socket.display()
    );
}

/// Terminals: `ctr run -t` and `ctr task exec -t` (ctr needs a terminal of
/// its own: `script` gives it one). The process sees a pty, ctr's window
/// size reaches it (ctr resizes after start, so the process waits for it,
/// up to 10 s), and its output and exit code reach ctr.
#[test]
fn terminals_for_run_and_exec() {
    let s = setup();
    let ctrd = &s.ctrd;
    let id = unique_id("shim-t");
    let ctr = |args: &str| {
        let cmd = format!(
            "stty cols 91 rows 23; ctr --address {} --namespace {} {args}",
            ctrd.address().display(),
            ctrd.namespace()
        );
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        )
    };
    const SIZE: &str = r#"n=0; until [ "$(stty size 2>/dev/null)" = "23 91" ] || [ $n -ge 200 ]; do n=$((n+1)); sleep 0.05; done; stty size"#;
    let (code, out) = ctr(&format!(
        "run -t --runtime {RUNTIME} {COUNTER_IMAGE} {id} sh -c 'tty; {SIZE}; exit 7'"
    ));
    assert_eq!(code, Some(7), "{out}\n{}", ctrd.log());
    assert!(out.contains("/dev/pts/0") && out.contains("23 91"), "{out}");
    // ctr run (not detached) deleted the task when it exited.
    ctrd.ctr(&["containers", "delete", &id]).ok();

    // exec -t into a running container.
    run_null_io(ctrd, &format!("{id}-b"), &["sleep", "1000"]);
    let (code, out) = ctr(&format!(
        "tasks exec -t --exec-id tty {id}-b sh -c 'tty; {SIZE}'"
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("/dev/pts/") && out.contains("23 91"), "{out}");
    let c = format!("{id}-b");
    let _ = ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &c]);
    wait_for("the task to stop", || {
        ctrd.task(&c).filter(|(_, st)| st == "STOPPED").map(|_| ())
    });
    ctrd.ctr(&["tasks", "delete", &c]).ok();
    ctrd.ctr(&["containers", "delete", &c]).ok();
    assert_all_gone(&s, &[&id, &format!("{id}-b")]);
}

/// A checkpoint the engine refuses (the container holds syslogd's unix
/// socket, which stasis does not save) fails with stasis' message and the
/// dump log's path, and the task runs on untouched.
#[test]
fn a_refused_checkpoint_reports_why_and_the_task_runs_on() {
    let s = setup();
    let ctrd = &s.ctrd;
    let id = unique_id("shim-r");
    let workload = "syslogd -n -O /tmp/messages & exec /bin/counter /tmp/state";
    let (_, rootfs) = run_counter(ctrd, &id, &["sh", "-c", workload]);

    let ck = ctrd.ctr(&["tasks", "checkpoint", &id]);
    assert_ne!(
        ck.code, 0,
        "a checkpoint of a unix socket succeeded: {ck:?}"
    );
    let dump_log = ctrd.bundle(&id).join("checkpoint-dump.log");
    assert!(
        ck.stderr.contains("unix socket")
            && ck.stderr.contains(&format!("path= {}", dump_log.display())),
        "{ck:?}"
    );
    assert!(dump_log.is_file());
    assert_eq!(
        status(ctrd, &id).unwrap(),
        "RUNNING",
        "resumed after the failed checkpoint"
    );
    let p = progress_in(&rootfs).unwrap();
    wait_for("the counter to go on", || {
        progress_in(&rootfs).filter(|q| q.iter > p.iter + 3)
    });
    assert_eq!(progress_in(&rootfs).unwrap().errors, 0);
    assert!(ctrd
        .list("images")
        .iter()
        .all(|i| !i.starts_with("containerd.io/checkpoint/")));

    ctrd.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", &id])
        .ok();
    wait_status(ctrd, &id, "STOPPED");
    ctrd.ctr(&["tasks", "delete", &id]).ok();
    ctrd.ctr(&["containers", "delete", &id]).ok();
    assert_all_gone(&s, &[&id]);
}

/// An OOM kill in the container's memory cgroup is published as
/// `/tasks/oom` (TaskOOM), as containerd's runc shim does: containerd's CRI
/// plugin reports `OOMKilled` from it. Under a 32 MiB limit `dd` reads
/// 64 MiB into one buffer and is killed; the container's shell survives,
/// records dd's status and goes on. A container without OOM gets no event.
/// The kernel may notify several times for one kill (each OOM invocation
/// while the victim exits), and like containerd's runc shim this shim
/// publishes each notification, so the test counts none exactly.
#[test]
fn an_oom_kill_is_published_as_a_task_oom_event() {
    let s = setup();
    let ctrd = &s.ctrd;
    let id = unique_id("shim-oom");
    let calm = unique_id("shim-calm");
    let events = ctrd.events();
    let script = "dd if=/dev/zero of=/dev/null bs=64M count=1; echo $? > /tmp/dd-status; exec /bin/counter /tmp/state";
    let run = ctrd.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        "33554432",
        COUNTER_IMAGE,
        &id,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(run.code, 0, "ctr run: {run:?}\n{}", ctrd.log());
    wait_status(ctrd, &id, "RUNNING");
    let (_, calm_rootfs) = run_counter(ctrd, &calm, &["/bin/counter", "/tmp/state"]);
    let rootfs = ctrd.bundle(&id).join("rootfs");
    let dd = wait_for("dd's exit status", || {
        fs::read_to_string(rootfs.join("tmp/dd-status"))
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    assert_eq!(dd.trim(), "137", "dd was not killed by the OOM killer");
    let line = events.wait_line(WAIT, |l| l.contains("/tasks/oom"));
    let line = line.unwrap_or_else(|| panic!("no /tasks/oom event:\n{}\n{}", events.seen(), ctrd.log()));
    assert!(line.contains(&format!("\"container_id\":\"{id}\"")), "{line}");
    wait_for("the counter after the OOM kill", || {
        progress_in(&rootfs).filter(|p| p.iter >= 3)
    });
    assert_eq!(status(ctrd, &id).unwrap(), "RUNNING");
    assert!(progress_in(&calm_rootfs).unwrap().iter >= 3);
    let before_delete = events.seen().matches("/tasks/oom").count();

    for c in [&id, &calm] {
        ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", c]).ok();
        wait_status(ctrd, c, "STOPPED");
        ctrd.ctr(&["tasks", "delete", c]).ok();
        ctrd.ctr(&["containers", "delete", c]).ok();
    }
    let log = events.stop();
    let ooms: Vec<&str> = log.lines().filter(|l| l.contains("/tasks/oom")).collect();
    assert!(
        ooms.iter().all(|l| l.contains(&format!("\"container_id\":\"{id}\""))),
        "OOM events only for {id} (none for {calm}):\n{log}"
    );
    assert_eq!(ooms.len(), before_delete, "no OOM event from removing the cgroups:\n{log}");
    assert_all_gone(&s, &[&id, &calm]);
}

/// `--log-uri binary:///logger?dir=…`: the shim starts the logger with the
/// container's stdout on fd 3, stderr on fd 4, the ready pipe on fd 5,
/// the query as arguments and the container's id and namespace in its
/// environment, as containerd's runc shim does (nerdctl logs this way).
/// The logger here records all that, says it is ready (closes fd 5), then
/// copies the two streams to files; it ends by itself once the container
/// is gone.
#[test]
fn a_binary_log_uri_runs_the_logger_with_both_streams() {
    let s = setup();
    let ctrd = &s.ctrd;
    let id = unique_id("shim-log");
    let dir = s.scratch.path().join("logs");
    fs::create_dir(&dir).unwrap();
    let logger = s.scratch.path().join("log ger");
    fs::write(
        &logger,
        "#!/bin/sh\n\
         d=$2\n\
         echo \"$$\" > \"$d/pid\"\n\
         echo \"$CONTAINER_ID $CONTAINER_NAMESPACE $#:$1:$3:$4\" > \"$d/env\"\n\
         ls /proc/$$/fd | sort -n | tr '\\n' ' ' > \"$d/fds\"\n\
         exec 5>&-\n\
         cat <&3 4<&- > \"$d/out\" & cat <&4 3<&- > \"$d/err\" &\n\
         exec 3<&- 4<&-\n\
         wait\n",
    )
    .unwrap();
    fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let uri = format!(
        "binary://{}?dir={}&x=a+b",
        logger.display().to_string().replace(' ', "%20"),
        dir.display()
    );
    let run = ctrd.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--log-uri",
        &uri,
        COUNTER_IMAGE,
        &id,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exec /bin/counter /tmp/state",
    ]);
    assert_eq!(run.code, 0, "ctr run: {run:?}\n{}", ctrd.log());
    wait_status(ctrd, &id, "RUNNING");
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    wait_for("both streams in the logger's files", || {
        (read("out").contains("to-stdout") && read("err").contains("to-stderr")).then_some(())
    });
    assert_eq!(
        read("env").trim(),
        format!("{id} {} 4:dir:x:a b", ctrd.namespace()),
        "the logger's environment and arguments"
    );
    assert!(read("fds").starts_with("0 1 2 3 4 5 "), "{}", read("fds"));
    assert!(!read("out").contains("to-stderr") && !read("err").contains("to-stdout"));
    let logger_pid: i32 = read("pid").trim().parse().unwrap();

    ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]).ok();
    wait_status(ctrd, &id, "STOPPED");
    ctrd.ctr(&["tasks", "delete", &id]).ok();
    ctrd.ctr(&["containers", "delete", &id]).ok();
    wait_for("the logger to end", || {
        (!Path::new(&format!("/proc/{logger_pid}")).exists()).then_some(())
    });
    assert_all_gone(&s, &[&id]);
}

/// Containers of one Kubernetes pod share a shim: the CRI plugin puts the
/// pod sandbox's id into every container's spec annotations
/// (`io.kubernetes.cri.sandbox-id`) and, as with containerd's runc shim,
/// the shim of the first container serves the others. ctr runs them here
/// with such specs (`--config`). A checkpoint of one container leaves both
/// running; a container deleted from the shared shim leaves its neighbour
/// running; the shim ends with the last one.
#[test]
fn containers_of_one_pod_share_a_shim() {
    let s = setup();
    let ctrd = &s.ctrd;
    let (a, b, solo) = (unique_id("pod-a"), unique_id("pod-b"), unique_id("solo"));
    // The image's files, from a container of it, as plain directories:
    // with --config, ctr takes the rootfs from the spec.
    let (_, solo_rootfs) = run_counter(ctrd, &solo, &["/bin/counter", "/tmp/state"]);
    let mut spec: serde_json::Value =
        serde_json::from_str(&ctrd.ctr(&["oci", "spec"]).ok().stdout).expect("ctr oci spec");
    spec["process"]["args"] = serde_json::json!(["/bin/counter", "/tmp/state"]);
    spec["annotations"] = serde_json::json!({ "io.kubernetes.cri.sandbox-id": a });
    // The counter renames its state file every few milliseconds: paused,
    // its rootfs copies without a file vanishing under cp.
    let pause = ctrd.ctr(&["tasks", "pause", &solo]);
    assert_eq!(pause.code, 0, "ctr tasks pause: {pause:?}");
    let mut rootfs = Vec::new();
    for c in [&a, &b] {
        let root = s.scratch.path().join(format!("rootfs-{c}"));
        let cp = Command::new("cp").arg("-a").arg(&solo_rootfs).arg(&root).status().unwrap();
        assert!(cp.success(), "copy the rootfs");
        let _ = fs::remove_file(root.join("tmp/state"));
        let _ = fs::remove_file(root.join("tmp/state.tmp"));
        rootfs.push(root);
    }
    let resume = ctrd.ctr(&["tasks", "resume", &solo]);
    assert_eq!(resume.code, 0, "ctr tasks resume: {resume:?}");
    for (c, root) in [&a, &b].into_iter().zip(&rootfs) {
        spec["root"] = serde_json::json!({ "path": root, "readonly": false });
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{c}", ctrd.namespace()));
        let spec_file = s.scratch.path().join(format!("spec-{c}.json"));
        fs::write(&spec_file, spec.to_string()).unwrap();
        let spec_arg = spec_file.display().to_string();
        let run = ctrd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "--config", &spec_arg, c]);
        assert_eq!(run.code, 0, "ctr run {c}: {run:?}\n{}", ctrd.log());
        wait_status(ctrd, c, "RUNNING");
    }
    for r in &rootfs {
        wait_for("both pod counters", || progress_in(r).filter(|p| p.iter >= 3));
    }
    assert_eq!(shim_socket(ctrd, &a), shim_socket(ctrd, &b), "one shim for the pod");
    assert_ne!(shim_socket(ctrd, &a), shim_socket(ctrd, &solo), "its own shim for the other");
    assert_eq!(ctrd.shim_pids().len(), 2, "one shim for the pod, one for the other");
    // A checkpoint of one container of the shared shim; both run on.
    let ck = ctrd.ctr(&["tasks", "checkpoint", &b]);
    assert_eq!(ck.code, 0, "ctr task checkpoint in a shared shim: {ck:?}\n{}", ctrd.log());
    for r in &rootfs {
        let p = progress_in(r).unwrap();
        wait_for("both pod counters after the checkpoint", || {
            progress_in(r).filter(|q| q.iter > p.iter + 2 && q.errors == 0)
        });
    }
    ctrd.ctr(&["images", "rm", "--sync", ck.stdout.trim()]).ok();

    ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &a]).ok();
    wait_status(ctrd, &a, "STOPPED");
    ctrd.ctr(&["tasks", "delete", &a]).ok();
    ctrd.ctr(&["containers", "delete", &a]).ok();
    let p = progress_in(&rootfs[1]).unwrap();
    wait_for("b after a is gone", || progress_in(&rootfs[1]).filter(|q| q.iter > p.iter + 3));
    assert_eq!(status(ctrd, &b).unwrap(), "RUNNING");
    assert_eq!(ctrd.shim_pids().len(), 2, "the pod's shim serves b on");

    for c in [&b, &solo] {
        ctrd.ctr(&["tasks", "kill", "--signal", "SIGKILL", c]).ok();
        wait_status(ctrd, c, "STOPPED");
        ctrd.ctr(&["tasks", "delete", c]).ok();
        ctrd.ctr(&["containers", "delete", c]).ok();
    }
    assert_all_gone(&s, &[&a, &b, &solo]);
}
