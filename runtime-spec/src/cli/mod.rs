//! The command line: runc's global flags, then a verb. Verbs that stasis
//! does not implement itself are handed, untouched, to the underlying
//! runtime; stasis' own verbs are parsed here into typed option structs.

mod checkpoint;
pub mod flags;
mod global;
mod tree;
pub mod usage;

#[cfg(test)]
mod tests;

use std::ffi::OsString;

#[allow(unused_imports)] // for the engine commands
pub use checkpoint::ManageCgroupsMode;
pub use checkpoint::{CheckpointOpts, RestoreOpts};
pub use global::{GlobalOpts, LogFormat};
pub use tree::{InspectOpts, StubOpts, TreeDumpOpts, TreeRestoreOpts};

use flags::{FlagSpec, Mode, Parsed};

/// Verbs passed through to the underlying runtime (runc by default).
pub const DELEGATED_VERBS: &[&str] = &[
    "create", "start", "run", "state", "kill", "delete", "list", "ps", "exec", "pause", "resume",
    "events", "update", "features", "spec",
];

/// A verb stasis parses itself.
#[derive(Debug)]
pub struct VerbSpec {
    pub name: &'static str,
    /// Positional arguments, for the usage line.
    pub args: &'static str,
    pub about: &'static str,
    pub flags: &'static [FlagSpec],
}

/// Stasis' own verbs, for help and usage.
pub static OWN_VERBS: &[&VerbSpec] = &[
    &checkpoint::CHECKPOINT,
    &checkpoint::RESTORE,
    &tree::TREE,
    &tree::TREE_DUMP,
    &tree::TREE_RESTORE,
    &tree::INSPECT,
];

/// Which usage text goes with a help request or a usage error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    None,
    Global,
    Verb(&'static VerbSpec),
}

impl PartialEq for VerbSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for VerbSpec {}

/// A command line that cannot be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    /// `Usage::None`: a plain error. Otherwise stderr also gets
    /// "Incorrect Usage: …" and this usage text.
    pub usage: Usage,
    pub exit_code: i32,
}

impl UsageError {
    /// A malformed command line for `verb`.
    pub fn flag(verb: &'static VerbSpec, message: String) -> Self {
        Self {
            message,
            usage: Usage::Verb(verb),
            exit_code: 1,
        }
    }

    /// A well-formed command line with an unacceptable value.
    pub fn invalid(message: String) -> Self {
        Self {
            message,
            usage: Usage::None,
            exit_code: 1,
        }
    }

    fn global(message: String) -> Self {
        Self {
            message,
            usage: Usage::Global,
            exit_code: 1,
        }
    }
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Print this usage text to stdout and exit 0.
    Help(Usage),
    Version,
    /// Exec the underlying runtime with `verb` and `args` unchanged.
    Delegate {
        verb: String,
        args: Vec<OsString>,
    },
    Checkpoint(CheckpointOpts),
    Restore(RestoreOpts),
    TreeDump(TreeDumpOpts),
    TreeRestore(TreeRestoreOpts),
    Inspect(InspectOpts),
    /// Hidden: `restore-stub IMAGE_DIR READY_FD HOLD_FD`, run by the
    /// underlying runtime as a restored container's pid 1.
    RestoreStub(StubOpts),
}

/// The command line after the global flags were read.
#[derive(Debug)]
pub struct CommandLine {
    pub global: GlobalOpts,
    help: bool,
    version: bool,
    rest: Vec<OsString>,
}

/// Read the global flags (everything up to the verb).
pub fn parse_global(args: &[OsString]) -> Result<CommandLine, UsageError> {
    let p = flags::parse(global::GLOBAL_FLAGS, args, Mode::StopAtPositional)
        .map_err(|e| UsageError::global(e.to_string()))?;
    let global = GlobalOpts::from_parsed(&p).map_err(UsageError::invalid)?;
    Ok(CommandLine {
        global,
        help: p.bool("help"),
        version: p.bool("version"),
        rest: args[p.rest..].to_vec(),
    })
}

impl CommandLine {
    /// Read the verb and, for stasis' own verbs, its flags.
    pub fn action(&self) -> Result<Action, UsageError> {
        if self.help {
            return Ok(Action::Help(Usage::Global));
        }
        if self.version {
            return Ok(Action::Version);
        }
        let Some((verb, args)) = self.rest.split_first() else {
            return Ok(Action::Help(Usage::Global));
        };
        let verb_str = verb.to_string_lossy();
        match verb_str.as_ref() {
            "checkpoint" => own(&checkpoint::CHECKPOINT, args, |p| {
                CheckpointOpts::from_parsed(p).map(Action::Checkpoint)
            }),
            "restore" => own(&checkpoint::RESTORE, args, |p| {
                RestoreOpts::from_parsed(p).map(Action::Restore)
            }),
            "tree" => tree_action(args),
            // Not in any help text: only `stasis restore` writes this argv.
            tree::STUB_VERB => StubOpts::from_args(args).map(Action::RestoreStub),
            "inspect" => own(&tree::INSPECT, args, |p| {
                InspectOpts::from_parsed(p).map(Action::Inspect)
            }),
            "help" | "h" => Ok(help_action(args)),
            v if DELEGATED_VERBS.contains(&v) => Ok(Action::Delegate {
                verb: v.to_string(),
                args: args.to_vec(),
            }),
            v => Err(UsageError {
                message: format!("no help topic for '{v}'"),
                usage: Usage::None,
                exit_code: 3,
            }),
        }
    }
}

/// Parse an own verb's flags and build its action, or its help.
fn own(
    verb: &'static VerbSpec,
    args: &[OsString],
    build: impl FnOnce(&Parsed) -> Result<Action, UsageError>,
) -> Result<Action, UsageError> {
    let p = flags::parse(verb.flags, args, Mode::Reorder)
        .map_err(|e| UsageError::flag(verb, e.to_string()))?;
    if p.bool("help") {
        return Ok(Action::Help(Usage::Verb(verb)));
    }
    build(&p)
}

fn tree_action(args: &[OsString]) -> Result<Action, UsageError> {
    let p = flags::parse(tree::TREE.flags, args, Mode::StopAtPositional)
        .map_err(|e| UsageError::flag(&tree::TREE, e.to_string()))?;
    if p.bool("help") {
        return Ok(Action::Help(Usage::Verb(&tree::TREE)));
    }
    let rest = &args[p.rest..];
    match rest.split_first() {
        Some((sub, args)) if sub == "dump" => own(&tree::TREE_DUMP, args, |p| {
            TreeDumpOpts::from_parsed(p).map(Action::TreeDump)
        }),
        Some((sub, args)) if sub == "restore" => own(&tree::TREE_RESTORE, args, |p| {
            TreeRestoreOpts::from_parsed(p).map(Action::TreeRestore)
        }),
        Some((sub, _)) if sub == "help" => Ok(Action::Help(Usage::Verb(&tree::TREE))),
        Some((sub, _)) => Err(UsageError::flag(
            &tree::TREE,
            format!(
                "no such subcommand {:?} for \"tree\": use dump or restore",
                sub.to_string_lossy()
            ),
        )),
        None => Err(UsageError::flag(
            &tree::TREE,
            "\"tree\" requires a subcommand: dump or restore".into(),
        )),
    }
}

/// `help [VERB]`: own verbs are answered here, the rest by the runtime.
fn help_action(args: &[OsString]) -> Action {
    let Some(topic) = args.first() else {
        return Action::Help(Usage::Global);
    };
    let topic = topic.to_string_lossy();
    match OWN_VERBS.iter().find(|v| v.name == topic) {
        Some(v) => Action::Help(Usage::Verb(v)),
        None => Action::Delegate {
            verb: "help".into(),
            args: args.to_vec(),
        },
    }
}

/// runc's "requires exactly 1 argument(s)" message for `verb`.
pub(crate) fn exact_args_msg(verb: &VerbSpec) -> String {
    format!("\"{}\" requires exactly 1 argument(s)", verb.name)
}

/// The single `<container-id>` positional of `verb`.
pub(crate) fn one_id(verb: &'static VerbSpec, p: &Parsed) -> Result<String, UsageError> {
    let [id] = p.positionals.as_slice() else {
        return Err(UsageError::flag(verb, exact_args_msg(verb)));
    };
    let id = id
        .to_str()
        .ok_or_else(|| UsageError::invalid(format!("invalid container id: {id:?}")))?;
    if id.is_empty() {
        return Err(UsageError::invalid("container id cannot be empty".into()));
    }
    Ok(id.to_string())
}
