//! The built binary's command-line contract, without containers or root.
//! (Having an integration test here also makes `cargo test -p stasis` build
//! the `stasis` binary that the `stasis-integration` tests drive.)

use std::process::{Command, Output, Stdio};

fn stasis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stasis"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run stasis")
}

#[test]
fn help_exits_zero() {
    for args in [
        &["--help"][..],
        &["checkpoint", "--help"],
        &["restore", "-h"],
        &["help", "tree"],
    ] {
        let out = stasis(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("USAGE:"),
            "{args:?}"
        );
    }
}

#[test]
fn usage_errors_exit_one_with_go_flag_wording() {
    let out = stasis(&["checkpoint", "-x", "c"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Incorrect Usage: flag provided but not defined: -x\n"),
        "{stderr}"
    );
    let out = stasis(&["restore", "--lsm-mount-context"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag needs an argument"));
}

#[test]
fn version() {
    let out = stasis(&["-v"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stasis version "));
}
