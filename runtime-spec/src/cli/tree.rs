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
