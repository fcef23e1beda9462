//! Go `flag` / urfave-cli semantics.

use std::path::PathBuf;

use super::super::flags::{self, FlagError, FlagSpec, Mode};
use super::{action, checkpoint, error, os, restore};
use crate::cli::{Action, Usage};

static SPECS: &[FlagSpec] = &[
    FlagSpec::boolean("all", "").alias(&["a"]),
    FlagSpec::value("name", ""),
    FlagSpec::int("count", ""),
    FlagSpec::repeated("ns", ""),
];

#[test]
fn single_dash_long_flags() {
    let o = restore(&["restore", "-no-subreaper", "-bundle", "/b", "-detach", "c1"]);
    assert!(o.no_subreaper && o.detach);
    assert_eq!(o.bundle, Some(PathBuf::from("/b")));
    assert_eq!(o.id, "c1");
}

#[test]
fn equals_form_and_separate_value() {
    let o = restore(&[
        "restore",
        "--bundle=/b1",
        "--pid-file",
        "/p",
        "--lsm-profile=selinux:x",
        "c",
    ]);
    assert_eq!(o.bundle, Some(PathBuf::from("/b1")));
    assert_eq!(o.pid_file, Some(PathBuf::from("/p")));
    assert_eq!(o.lsm_profile.as_deref(), Some("selinux:x"));
    // A value flag takes the next argument whatever it looks like.
    let o = checkpoint(&["checkpoint", "--image-path", "--leave-running", "c"]);
    assert_eq!(o.image_path, Some(PathBuf::from("--leave-running")));
    assert!(!o.leave_running);
}

#[test]
fn repeated_booleans_and_bool_values() {
    let o = checkpoint(&["checkpoint", "--leave-running", "--leave-running", "c"]);
    assert!(o.leave_running);
    let o = checkpoint(&[
        "checkpoint",
        "--leave-running",
        "--leave-running=false",
        "c",
    ]);
    assert!(!o.leave_running);
    let o = checkpoint(&["checkpoint", "--file-locks=1", "--pre-dump=True", "c"]);
    assert!(o.file_locks && o.pre_dump);
    assert_eq!(
        error(&["checkpoint", "--leave-running=yes", "c"]),
        "invalid boolean value \"yes\" for -leave-running: parse error"
    );
}

#[test]
fn repeatable_value_flags_collect_and_last_wins_otherwise() {
    let p = flags::parse(
        SPECS,
        &os(&["--ns", "a", "--ns=b", "--name", "x", "-name=y"]),
        Mode::Reorder,
    )
    .unwrap();
    assert_eq!(p.all("ns"), ["a", "b"]);
    assert_eq!(p.str("name"), Some("y"));
    let o = checkpoint(&[
        "checkpoint",
        "--empty-ns",
        "network",
        "--empty-ns=network",
        "c",
    ]);
    assert_eq!(o.empty_ns, ["network", "network"]);
    assert_eq!(
        error(&["checkpoint", "--empty-ns", "pid", "c"]),
        "namespace \"pid\" is not supported"
    );
}

#[test]
fn unknown_flag_message() {
    let e = action(&["checkpoint", "-x", "c"]).unwrap_err();
    assert_eq!(e.message, "flag provided but not defined: -x");
    assert_eq!(e.exit_code, 1);
    assert_eq!(
        error(&["restore", "--bogus=1", "c"]),
        "flag provided but not defined: -bogus"
    );
    assert_eq!(
        error(&["--bogus", "state", "c"]),
        "flag provided but not defined: -bogus"
    );
    assert_eq!(error(&["restore", "---x", "c"]), "bad flag syntax: ---x");
}

#[test]
fn missing_value_message() {
    let e = action(&["restore", "--lsm-mount-context"]).unwrap_err();
    assert_eq!(e.message, "flag needs an argument: -lsm-mount-context");
    assert!(matches!(e.usage, Usage::Verb(v) if v.name == "restore"));
    assert_eq!(error(&["--root"]), "flag needs an argument: -root");
    assert_eq!(
        error(&["checkpoint", "--status-fd", "x", "c"]),
        "invalid value \"x\" for flag -status-fd: parse error"
    );
}

#[test]
fn double_dash_ends_flags() {
    let o = checkpoint(&["checkpoint", "--leave-running", "--", "-x"]);
    assert_eq!(o.id, "-x");
    let p = flags::parse(SPECS, &os(&["-a", "--", "--name", "v"]), Mode::Reorder).unwrap();
    assert!(p.bool("all"));
    assert_eq!(p.positionals, os(&["--name", "v"]));
    // At the global level `--` is consumed and the verb follows.
    assert!(
        matches!(action(&["--", "state", "c"]), Ok(Action::Delegate { verb, .. }) if verb == "state")
    );
}

#[test]
fn positional_args_and_reordering() {
    // `kill ID SIGNAL --all`: known flags after positionals still count,
    // unknown ones stay positional (urfave/cli v1).
    let p = flags::parse(SPECS, &os(&["c1", "KILL", "--all", "-z"]), Mode::Reorder).unwrap();
    assert!(p.bool("all"));
    assert_eq!(p.positionals, os(&["c1", "KILL", "-z"]));
    let p = flags::parse(SPECS, &os(&["--count", "3", "c1", "-", "9"]), Mode::Reorder).unwrap();
    assert_eq!(p.int("count"), Some(3));
    assert_eq!(p.positionals, os(&["c1", "-", "9"]));
    let o = checkpoint(&["checkpoint", "c", "--image-path", "/img"]);
    assert_eq!(
        (o.id.as_str(), o.image_path),
        ("c", Some(PathBuf::from("/img")))
    );
    assert_eq!(
        error(&["checkpoint"]),
        "\"checkpoint\" requires exactly 1 argument(s)"
    );
    assert_eq!(
        error(&["restore", "a", "b"]),
        "\"restore\" requires exactly 1 argument(s)"
    );
    assert_eq!(
        flags::parse(SPECS, &os(&["--name"]), Mode::Reorder).unwrap_err(),
        FlagError::NeedsArgument("name".into())
    );
}
