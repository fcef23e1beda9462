//! Parser tests against the argv shapes runc's callers really send
//! (interfaces notes §1.1, §2.2, §2.3, §4.3, §4.4).

mod parsing;
mod verbs;

use std::ffi::OsString;

use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn action(args: &[&str]) -> Result<Action, UsageError> {
    parse_global(&os(args))?.action()
}

fn checkpoint(args: &[&str]) -> CheckpointOpts {
    match action(args) {
        Ok(Action::Checkpoint(o)) => o,
        other => panic!("not a checkpoint: {other:?}"),
    }
}

fn restore(args: &[&str]) -> RestoreOpts {
    match action(args) {
        Ok(Action::Restore(o)) => o,
        other => panic!("not a restore: {other:?}"),
    }
}

fn error(args: &[&str]) -> String {
    match action(args) {
        Err(e) => e.message,
        Ok(a) => panic!("expected an error, got {a:?}"),
    }
}
