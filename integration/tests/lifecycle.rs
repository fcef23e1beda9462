//! A container lifecycle driven through `stasis`, compared step by step with
//! plain runc on the same bundle: output shapes, statuses and exit codes.

use std::fs;
use std::time::Duration;

use serde_json::Value;
use stasis_integration::{unique_id, Bundle, Runtime, TempDir};

const LOOP: &[&str] = &["sh", "-c", "while true; do sleep 1; done"];
const WAIT: Duration = Duration::from_secs(10);

/// Compare a `state` (or `list --format json` entry) of stasis' container
/// with runc's: equal where they must be, same shape where they differ.
#[track_caller]
fn assert_same_state(runc: &Value, stasis: &Value, ids: (&str, &str), status: &str) {
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        keys(runc),
        keys(stasis),
        "different fields:\n{runc}\n{stasis}"
    );
    assert_eq!(runc["id"], ids.0);
    assert_eq!(stasis["id"], ids.1);
    for v in [runc, stasis] {
        assert_eq!(v["status"], status, "{v}");
        let pid = v["pid"].as_i64().expect("pid is a number");
        assert!(
            if status == "stopped" {
                pid == 0
            } else {
                pid > 0
            },
            "{v}"
        );
        let created = v["created"].as_str().expect("created is a string");
        assert!(
            created.len() >= 20 && created.as_bytes()[10] == b'T',
            "created: {created}"
        );
    }
    for field in ["ociVersion", "bundle", "rootfs", "owner", "annotations"] {
        assert_eq!(runc.get(field), stasis.get(field), "field {field}");
    }
}

/// The `list` table row for `id`, split on whitespace.
fn list_row(table: &str, id: &str) -> Vec<String> {
    let row = table
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{id} not in\n{table}"));
    row.split_whitespace().map(str::to_string).collect()
}

#[test]
fn lifecycle_matches_runc() {
    let bundle = Bundle::busybox(LOOP);
    let (runc, stasis) = (Runtime::runc(), Runtime::stasis());
    let (rid, sid) = (unique_id("runc"), unique_id("stas"));

    let rc = runc.run_detached(&bundle, &rid);
    let sc = stasis.run_detached(&bundle, &sid);
    assert_eq!(rc.run.code, 0, "runc run: {:?}", rc.run);
    assert_eq!(sc.run.code, 0, "stasis run: {:?}", sc.run);

    // state
    let (rs, ss) = (runc.state(&rid), stasis.state(&sid));
    assert_same_state(&rs, &ss, (&rid, &sid), "running");
    assert_eq!(ss["bundle"], bundle.path().to_str().expect("utf-8 path"));
    let pid = ss["pid"].as_i64().expect("pid") as i32;
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
        "init {pid} is not alive"
    );

    // list, table and JSON
    let (rl, sl) = (runc.exec(&["list"]).ok(), stasis.exec(&["list"]).ok());
    // Column names only: tabwriter pads them to the widest value, and the
    // two containers' pids may differ in length.
    let header = |t: &str| t.lines().next().map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    assert_eq!(header(&rl.stdout), header(&sl.stdout));
    let (rrow, srow) = (list_row(&rl.stdout, &rid), list_row(&sl.stdout, &sid));
    assert_eq!(rrow.len(), srow.len(), "{rrow:?} vs {srow:?}");
    assert_eq!(srow[1], pid.to_string());
    assert_eq!(rrow[2..4], srow[2..4], "status and bundle");
    assert_eq!(rrow[5..], srow[5..], "owner");
    let json = |o: &stasis_integration::Outcome| -> Vec<Value> {
        serde_json::from_str(&o.stdout).expect("list --format json is a JSON array")
    };
    let (rj, sj) = (
        json(&runc.exec(&["list", "--format", "json"]).ok()),
        json(&stasis.exec(&["list", "--format=json"]).ok()),
    );
    assert_eq!((rj.len(), sj.len()), (1, 1));
    assert_same_state(&rj[0], &sj[0], (&rid, &sid), "running");

    // ps, exec (exit code passes through), start of a running container
    let ps = stasis.exec(&["ps", "--format", "json", &sid]).ok();
    let pids: Vec<i64> = serde_json::from_str(&ps.stdout).expect("ps json");
    assert!(pids.contains(&i64::from(pid)), "{pids:?}");
    for (rt, id) in [(&runc, &rid), (&stasis, &sid)] {
        let out = rt.exec(&["exec", id.as_str(), "sh", "-c", "echo hi; exit 7"]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (7, "hi\n"),
            "{} exec: {out:?}",
            rt.name
        );
    }
    let (r, s) = (runc.exec(&["start", &rid]), stasis.exec(&["start", &sid]));
    assert_eq!((r.code, s.code), (1, 1));
    assert!(
        s.stderr
            .contains("cannot start an already running container"),
        "{s:?}"
    );

    // pause / resume
    for (rt, id) in [(&runc, &rid), (&stasis, &sid)] {
        rt.exec(&["pause", id.as_str()]).ok();
        assert_eq!(rt.state(id)["status"], "paused");
        rt.exec(&["resume", id.as_str()]).ok();
        assert_eq!(rt.state(id)["status"], "running");
    }

    // kill by name and by number, then the same failures on a stopped one
    stasis.exec(&["kill", &sid, "KILL"]).ok();
    runc.exec(&["kill", &rid, "9"]).ok();
    let (rs, ss) = (
        runc.wait_status(&rid, "stopped", WAIT),
        stasis.wait_status(&sid, "stopped", WAIT),
    );
    assert_same_state(&rs, &ss, (&rid, &sid), "stopped");
    let (r, s) = (
        runc.exec(&["kill", &rid, "KILL"]),
        stasis.exec(&["kill", &sid, "KILL"]),
    );
    assert_eq!((r.code, s.code), (1, 1));
    assert!(s.stderr.contains("container not running"), "{s:?}");

    // delete, then the container is gone for both
    runc.exec(&["delete", &rid]).ok();
    stasis.exec(&["delete", &sid]).ok();
    let (r, s) = (runc.exec(&["state", &rid]), stasis.exec(&["state", &sid]));
    assert_eq!((r.code, s.code), (1, 1));
    assert!(s.stderr.contains("container does not exist"), "{s:?}");
    assert_eq!(stasis.exec(&["list", "-q"]).ok().stdout, "");
}

#[test]
fn missing_container_exit_codes_match_runc() {
    let (runc, stasis) = (Runtime::runc(), Runtime::stasis());
    let id = unique_id("missing");
    let cases: &[(&[&str], i32)] = &[
        (&["state", &id], 1),
        (&["kill", &id, "KILL"], 1),
        (&["kill", &id, "9"], 1),
        (&["delete", &id], 1),
        (&["delete", "--force", &id], 0),
        (&["start", &id], 1),
        (&["pause", &id], 1),
    ];
    for (args, want) in cases {
        let (r, s) = (runc.exec(args), stasis.exec(args));
        assert_eq!(r.code, *want, "runc {args:?}: {r:?}");
        assert_eq!(s.code, *want, "stasis {args:?}: {s:?}");
        if *want != 0 {
            assert!(
                s.stderr.contains("container does not exist"),
                "stasis {args:?}: {s:?}"
            );
        }
    }
}

#[test]
fn help_and_usage_errors_match_runc() {
    let (runc, stasis) = (Runtime::runc(), Runtime::stasis());
    for verb in ["checkpoint", "restore"] {
        for help in ["--help", "-h"] {
            let (r, s) = (runc.exec(&[verb, help]), stasis.exec(&[verb, help]));
            assert_eq!((r.code, s.code), (0, 0), "{verb} {help}");
            assert!(
                s.stdout.contains("USAGE:") && s.stdout.contains("--image-path"),
                "{s:?}"
            );
        }
    }
    let unknown: &[&[&str]] = &[
        &["checkpoint", "-x", "c"],
        &["restore", "--x=1", "c"],
        &["-x", "state", "c"],
        &["state", "-x", "c"],
    ];
    for args in unknown {
        let (r, s) = (runc.exec(args), stasis.exec(args));
        assert_eq!((r.code, s.code), (1, 1), "{args:?}");
        assert!(
            s.stderr.contains("flag provided but not defined: -x"),
            "{args:?}: {s:?}"
        );
    }
    let s = stasis.exec(&["checkpoint", "-x", "c"]);
    assert!(
        s.stderr
            .starts_with("Incorrect Usage: flag provided but not defined: -x"),
        "{s:?}"
    );
    // podman's probe for restore --pod
    let (r, s) = (
        runc.exec(&["restore", "--lsm-mount-context"]),
        stasis.exec(&["restore", "--lsm-mount-context"]),
    );
    assert_eq!((r.code, s.code), (1, 1));
    assert!(
        s.stderr
            .contains("flag needs an argument: -lsm-mount-context"),
        "{s:?}"
    );
    // what podman and containerd send must parse (then fail: no such container)
    let sent: &[&[&str]] = &[
        &[
            "checkpoint",
            "--image-path",
            "/i",
            "--work-path",
            "/w",
            "--leave-running",
            "--leave-running",
            "nope",
        ],
        &[
            "checkpoint",
            "--file-locks",
            "--leave-running=true",
            "--empty-ns",
            "network",
            "nope",
        ],
        &[
            "restore",
            "--detach",
            "--pid-file",
            "/p",
            "-no-subreaper",
            "--bundle",
            "/b",
            "--tcp-close",
            "nope",
        ],
        &[
            "restore",
            "--no-new-keyring",
            "--lsm-profile=selinux:x",
            "--lsm-mount-context=y",
            "nope",
        ],
    ];
    for args in sent {
        let s = stasis.exec(args);
        assert_eq!(s.code, 1, "{args:?}: {s:?}");
        assert!(!s.stderr.contains("Incorrect Usage"), "{args:?}: {s:?}");
    }
    let v = stasis.exec(&["--version"]).ok();
    assert!(v.stdout.starts_with("stasis version "), "{v:?}");
}

/// The lines of a `--log` file, parsed as JSON.
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[track_caller]
fn assert_error_line(lines: &[Value], needle: &str) {
    let hit = lines
        .iter()
        .find(|l| l["level"] == "error" && l["msg"].as_str().is_some_and(|m| m.contains(needle)));
    let hit = hit.unwrap_or_else(|| panic!("no error line with {needle:?} in {lines:?}"));
    let time = hit["time"].as_str().expect("time is a string");
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T',
        "time: {time}"
    );
}

#[test]
fn errors_are_logged_like_runc() {
    let stasis = Runtime::stasis();
    let logs = TempDir::new("stasis-logs");
    let log = |name: &str| {
        logs.path()
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    };

    // delegated verb: the runtime's own JSON line
    let f = log("state.json");
    let s = stasis.exec(&["--log", &f, "--log-format", "json", "state", "missing"]);
    assert_eq!(s.code, 1);
    assert!(s.stderr.contains("container does not exist"), "{s:?}");
    assert_error_line(&json_lines(f.as_ref()), "container does not exist");

    // stasis' own usage error
    let f = log("usage.json");
    let s = stasis.exec(&[
        "--log",
        &f,
        "--log-format=json",
        "restore",
        "--lsm-mount-context",
    ]);
    assert_eq!(s.code, 1);
    assert_error_line(
        &json_lines(f.as_ref()),
        "flag needs an argument: -lsm-mount-context",
    );

    // stasis' own verb failing
    let f = log("checkpoint.json");
    let s = stasis.exec(&["--log", &f, "--log-format", "json", "checkpoint", "missing"]);
    assert_eq!(s.code, 1);
    assert!(!s.stderr.trim().is_empty());
    let lines = json_lines(f.as_ref());
    assert_error_line(&lines, "");

    // text format
    let f = log("state.log");
    let s = stasis.exec(&["--log", &f, "state", "missing"]);
    assert_eq!(s.code, 1);
    let text = fs::read_to_string(&f).expect("text log");
    assert!(
        text.contains("level=error msg=\"container does not exist\""),
        "{text}"
    );
    assert!(text.starts_with("time=\""), "{text}");
}
