//! Options of stasis' own engine verbs, which runc does not have:
//! `tree dump`, `tree restore` (a bare process tree, no container) and
//! `inspect` (print an image directory).
// The fields are read by the checkpoint engine's commands, not by the CLI.
#![allow(dead_code)]

use std::path::PathBuf;

use super::flags::{FlagSpec, Parsed};
use super::{UsageError, VerbSpec};

/// `stasis tree dump --pid PID --image-path DIR [--leave-running]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDumpOpts {
    /// Root of the process tree to dump.
    pub pid: i32,
    pub image_path: PathBuf,
    pub leave_running: bool,
    /// Memory only; the tree keeps running and tracks its writes.
    pub pre_dump: bool,
    /// A pre-dump to build on, relative to the image path.
    pub parent_path: Option<String>,
}

/// `stasis tree restore --image-path DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRestoreOpts {
    pub image_path: PathBuf,
}

/// `stasis inspect IMAGE_DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectOpts {
    pub image_dir: PathBuf,
}

const HELP: FlagSpec = FlagSpec::boolean("help", "show help").alias(&["h"]);

pub static TREE: VerbSpec = VerbSpec {
    name: "tree",
    args: "dump|restore [command options]",
    about: "dump or restore a bare process tree (no container)",
    flags: &[HELP],
};

pub static TREE_DUMP: VerbSpec = VerbSpec {
    name: "tree dump",
    args: "",
    about: "dump the process tree rooted at --pid into --image-path",
    flags: &[
        FlagSpec::int("pid", "pid of the root of the tree (required)"),
        FlagSpec::value("image-path", "directory to write the image to (required)"),
        FlagSpec::boolean("leave-running", "leave the tree running after the dump"),
        FlagSpec::boolean("pre-dump", "dump memory only, keep the tree running and track its writes"),
        FlagSpec::value("parent-path", "a pre-dump this dump builds on, relative to --image-path"),
        HELP,
    ],
};

pub static TREE_RESTORE: VerbSpec = VerbSpec {
    name: "tree restore",
    args: "",
    about: "restore a process tree from --image-path",
    flags: &[
        FlagSpec::value("image-path", "directory to read the image from (required)"),
        HELP,
    ],
};

pub static INSPECT: VerbSpec = VerbSpec {
    name: "inspect",
    args: "<image-dir>",
    about: "print the contents of a checkpoint image directory",
    flags: &[HELP],
};

fn required_path(verb: &'static VerbSpec, p: &Parsed, name: &str) -> Result<PathBuf, UsageError> {
    match p.str(name) {
        Some(s) if !s.is_empty() => Ok(PathBuf::from(s)),
        _ => Err(UsageError::flag(
            verb,
            format!("\"{}\" requires --{name}", verb.name),
        )),
    }
}

fn no_positionals(verb: &'static VerbSpec, p: &Parsed) -> Result<(), UsageError> {
    match p.positionals.first() {
        None => Ok(()),
        Some(arg) => Err(UsageError::flag(
            verb,
            format!(
                "\"{}\" takes no arguments, got {:?}",
                verb.name,
                arg.to_string_lossy()
            ),
        )),
    }
}

impl TreeDumpOpts {
    pub(super) fn from_parsed(p: &Parsed) -> Result<Self, UsageError> {
        no_positionals(&TREE_DUMP, p)?;
        let pid = match p.int("pid") {
            Some(pid) if pid > 0 && pid <= i64::from(i32::MAX) => pid as i32,
            Some(pid) => {
                return Err(UsageError::invalid(format!(
                    "invalid value \"{pid}\" for flag -pid"
                )))
            }
            None => {
                return Err(UsageError::flag(
                    &TREE_DUMP,
                    "\"tree dump\" requires --pid".into(),
                ))
            }
        };
        Ok(Self {
            pid,
            image_path: required_path(&TREE_DUMP, p, "image-path")?,
            leave_running: p.bool("leave-running"),
            pre_dump: p.bool("pre-dump"),
            parent_path: p.str("parent-path").filter(|s| !s.is_empty()).map(str::to_string),
        })
    }
}

impl TreeRestoreOpts {
    pub(super) fn from_parsed(p: &Parsed) -> Result<Self, UsageError> {
        no_positionals(&TREE_RESTORE, p)?;
        Ok(Self {
            image_path: required_path(&TREE_RESTORE, p, "image-path")?,
        })
    }
}

impl InspectOpts {
    pub(super) fn from_parsed(p: &Parsed) -> Result<Self, UsageError> {
        match p.positionals.as_slice() {
            [dir] if !dir.is_empty() => Ok(Self {
                image_dir: PathBuf::from(dir),
            }),
            _ => Err(UsageError::flag(&INSPECT, super::exact_args_msg(&INSPECT))),
        }
    }
}

/// The hidden verb `stasis restore` puts in a restored container's config.
pub const STUB_VERB: &str = "restore-stub";

/// `stasis restore-stub IMAGE_DIR READY_FD HOLD_FD` (hidden, no flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubOpts {
    pub image_dir: PathBuf,
    pub ready_fd: i32,
    pub hold_fd: i32,
}

impl StubOpts {
    pub(super) fn from_args(args: &[std::ffi::OsString]) -> Result<Self, UsageError> {
        let usage = || UsageError::invalid(format!("usage: {STUB_VERB} IMAGE_DIR READY_FD HOLD_FD"));
        let [dir, ready, hold] = args else {
            return Err(usage());
        };
        let fd = |a: &std::ffi::OsString| a.to_str().and_then(|s| s.parse::<i32>().ok()).filter(|&n| n > 2);
        Ok(Self {
            image_dir: PathBuf::from(dir),
            ready_fd: fd(ready).ok_or_else(usage)?,
            hold_fd: fd(hold).ok_or_else(usage)?,
        })
    }
}
