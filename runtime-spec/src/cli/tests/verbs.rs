//! Global flags, delegation, help, and the typed options of own verbs.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{action, checkpoint, error, os, restore};
use crate::cli::*;

#[test]
fn global_flags_before_the_verb() {
    let cl = parse_global(&os(&[
        "--root",
        "/r",
        "--log=/l.json",
        "--log-format",
        "json",
        "--criu",
        "/usr/sbin/criu",
        "--systemd-cgroup",
        "--rootless=false",
        "-debug",
        "checkpoint",
        "--leave-running",
        "c",
    ]))
    .unwrap();
    let g = &cl.global;
    assert_eq!(g.root, Some(PathBuf::from("/r")));
    assert_eq!(g.log, Some(PathBuf::from("/l.json")));
    assert_eq!(g.log_format, LogFormat::Json);
    assert!(g.systemd_cgroup && g.debug);
    assert_eq!(g.rootless.as_deref(), Some("false"));
    assert!(matches!(cl.action(), Ok(Action::Checkpoint(o)) if o.leave_running && o.id == "c"));
    // Global flags after the verb belong to the verb (and are unknown there).
    assert_eq!(
        error(&["checkpoint", "--root", "/r", "c"]),
        "flag provided but not defined: -root"
    );
    assert_eq!(
        error(&["--log-format", "xml", "list"]),
        "invalid log-format: xml"
    );
}

#[test]
fn runtime_args_reserialise_globals() {
    let cl = parse_global(&os(&[
        "--root",
        "/r",
        "--log",
        "/l",
        "--log-format=json",
        "--criu",
        "c",
        "--runtime-binary",
        "/usr/bin/crun",
        "--debug=false",
        "--systemd-cgroup",
        "--rootless",
        "true",
        "kill",
        "x",
    ]))
    .unwrap();
    let args: Vec<String> = cl
        .global
        .runtime_args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "--root=/r",
            "--log=/l",
            "--log-format=json",
            "--rootless=true",
            "--systemd-cgroup"
        ]
    );
    assert_eq!(cl.global.runtime(), OsString::from("/usr/bin/crun"));
}

#[test]
fn delegated_verbs_keep_their_arguments_verbatim() {
    let a = action(&["--root", "/r", "kill", "--all", "c1", "9"]).unwrap();
    assert_eq!(
        a,
        Action::Delegate {
            verb: "kill".into(),
            args: os(&["--all", "c1", "9"])
        }
    );
    let a = action(&[
        "create",
        "--bundle",
        "/b",
        "--preserve-fds",
        "2",
        "-x",
        "--",
        "c",
    ])
    .unwrap();
    let Action::Delegate { verb, args } = a else {
        panic!("not delegated")
    };
    assert_eq!(verb, "create");
    assert_eq!(
        args,
        os(&["--bundle", "/b", "--preserve-fds", "2", "-x", "--", "c"])
    );
    for verb in DELEGATED_VERBS {
        assert!(
            matches!(action(&[verb]), Ok(Action::Delegate { .. })),
            "{verb}"
        );
    }
}

#[test]
fn harmless_restore_extras_are_accepted() {
    let o = restore(&[
        "restore",
        "--tcp-close",
        "--no-new-keyring",
        "--lsm-mount-context=ctx",
        "--lsm-profile",
        "selinux:l",
        "--parent-path",
        "../pre",
        "--preserve-fds",
        "2",
        "-d",
        "-b",
        "/b",
        "c",
    ]);
    assert!(o.tcp_close && o.no_new_keyring && o.detach);
    assert_eq!(o.lsm_mount_context.as_deref(), Some("ctx"));
    assert_eq!(o.parent_path, Some(PathBuf::from("../pre")));
    assert_eq!(o.preserve_fds, 2);
}

#[test]
fn help_and_version() {
    assert_eq!(
        action(&["checkpoint", "--help"]),
        Ok(Action::Help(Usage::Verb(&checkpoint::CHECKPOINT)))
    );
    assert_eq!(
        action(&["restore", "-h"]),
        Ok(Action::Help(Usage::Verb(&checkpoint::RESTORE)))
    );
    assert_eq!(
        action(&["help", "restore"]),
        Ok(Action::Help(Usage::Verb(&checkpoint::RESTORE)))
    );
    assert_eq!(action(&["--help"]), Ok(Action::Help(Usage::Global)));
    assert_eq!(action(&[]), Ok(Action::Help(Usage::Global)));
    assert_eq!(action(&["-v"]), Ok(Action::Version));
    assert!(
        matches!(action(&["help", "run"]), Ok(Action::Delegate { verb, .. }) if verb == "help")
    );
    let e = action(&["bogus"]).unwrap_err();
    assert_eq!(
        (e.message.as_str(), e.exit_code),
        ("no help topic for 'bogus'", 3)
    );
    for usage in [Usage::Global, Usage::Verb(&checkpoint::CHECKPOINT)] {
        assert!(usage::render(usage).contains("USAGE:"));
    }
    assert!(usage::render(Usage::Verb(&checkpoint::RESTORE)).contains("--bundle value, -b value"));
}

#[test]
fn checkpoint_typed_values() {
    let o = checkpoint(&[
        "checkpoint",
        "--status-fd",
        "3",
        "--manage-cgroups-mode=ignore",
        "--page-server",
        "10.0.0.1:27",
        "--parent-path",
        "../pre",
        "--work-path",
        "/w",
        "c",
    ]);
    assert_eq!(o.status_fd, Some(3));
    assert_eq!(o.manage_cgroups_mode, Some(ManageCgroupsMode::Ignore));
    assert_eq!(o.page_server.as_deref(), Some("10.0.0.1:27"));
    assert_eq!(o.parent_path, Some(PathBuf::from("../pre")));
    assert_eq!(
        checkpoint(&["checkpoint", "--status-fd=-1", "c"]).status_fd,
        None
    );
    assert_eq!(
        error(&["checkpoint", "--manage-cgroups-mode", "loose", "c"]),
        "invalid manage cgroups mode: \"loose\""
    );
    assert_eq!(error(&["checkpoint", ""]), "container id cannot be empty");
}

#[test]
fn engine_verbs() {
    let a = action(&[
        "tree",
        "dump",
        "--pid",
        "42",
        "--image-path=/img",
        "--leave-running",
    ]);
    let want = TreeDumpOpts {
        pid: 42,
        image_path: "/img".into(),
        leave_running: true,
        pre_dump: false,
        parent_path: None,
    };
    assert_eq!(a, Ok(Action::TreeDump(want)));
    let a = action(&["tree", "dump", "--pid=7", "--image-path", "/b", "--pre-dump", "-parent-path", "../a"]);
    let want = TreeDumpOpts {
        pid: 7,
        image_path: "/b".into(),
        leave_running: false,
        pre_dump: true,
        parent_path: Some("../a".into()),
    };
    assert_eq!(a, Ok(Action::TreeDump(want)));
    let a = action(&["tree", "restore", "-image-path", "/img"]);
    assert_eq!(
        a,
        Ok(Action::TreeRestore(TreeRestoreOpts {
            image_path: "/img".into()
        }))
    );
    assert_eq!(
        action(&["inspect", "/img"]),
        Ok(Action::Inspect(InspectOpts {
            image_dir: "/img".into()
        }))
    );
    assert_eq!(
        error(&["tree", "dump", "--image-path", "/i"]),
        "\"tree dump\" requires --pid"
    );
    assert_eq!(
        error(&["tree", "dump", "--pid", "1"]),
        "\"tree dump\" requires --image-path"
    );
    assert_eq!(
        error(&["tree", "dump", "--pid", "0", "--image-path", "/i"]),
        "invalid value \"0\" for flag -pid"
    );
    assert_eq!(
        error(&["tree"]),
        "\"tree\" requires a subcommand: dump or restore"
    );
    assert_eq!(
        error(&["inspect"]),
        "\"inspect\" requires exactly 1 argument(s)"
    );
    assert_eq!(
        action(&["tree", "dump", "-h"]),
        Ok(Action::Help(Usage::Verb(&tree::TREE_DUMP)))
    );
}

#[test]
fn hidden_restore_stub_verb() {
    let want = StubOpts { image_dir: PathBuf::from("/proc/self/fd/4"), ready_fd: 5, hold_fd: 6 };
    assert!(matches!(action(&["restore-stub", "/proc/self/fd/4", "5", "6"]), Ok(Action::RestoreStub(o)) if o == want));
    for bad in [&["restore-stub"][..], &["restore-stub", "d", "5"], &["restore-stub", "d", "x", "6"], &["restore-stub", "d", "1", "6"]] {
        assert!(error(bad).contains("usage: restore-stub"), "{bad:?}");
    }
    // Listed nowhere.
    assert!(!crate::cli::usage::render(Usage::Global).contains("restore-stub"));
}
