//! A flag parser with the semantics of Go's `flag` package as driven by
//! urfave/cli v1, which is how runc reads its command line and therefore the
//! dialect every runc caller (containerd, CRI-O, podman, conmon) speaks:
//!
//! * `-name` and `--name` are the same flag; there are no bundled short flags;
//! * `--name=value` and `--name value` both work for value flags, and a value
//!   flag takes the next argument whatever it looks like (`--image-path --x`);
//! * boolean flags take no separate value, only `--name=true|false|1|0|t|f…`,
//!   and may be repeated (`--leave-running --leave-running`);
//! * `--` ends the flags, a lone `-` is a positional argument;
//! * before the first positional argument an unknown flag is an error; after
//!   it, urfave moves known flags forward and leaves unknown ones in place as
//!   positional arguments (`kill ID KILL --all` works).
//!
//! Error texts are Go's, because callers match on them (podman greps
//! "flag needs an argument").

use std::ffi::{OsStr, OsString};
use std::fmt;

/// What a flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No separate value; `--flag=BOOL` is allowed.
    Bool,
    /// A string value.
    Value,
    /// A signed integer value.
    Int,
}

/// One entry of a verb's flag table.
#[derive(Debug)]
pub struct FlagSpec {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// Value flags only: keep every occurrence (Go `StringSlice`) instead of
    /// letting the last one win.
    pub repeatable: bool,
    /// One-line description for the usage text.
    pub help: &'static str,
}

impl FlagSpec {
    pub const fn boolean(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            aliases: &[],
            kind: Kind::Bool,
            repeatable: false,
            help,
        }
    }

    pub const fn value(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            aliases: &[],
            kind: Kind::Value,
            repeatable: false,
            help,
        }
    }

    pub const fn int(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            aliases: &[],
            kind: Kind::Int,
            repeatable: false,
            help,
        }
    }

    pub const fn repeated(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            aliases: &[],
            kind: Kind::Value,
            repeatable: true,
            help,
        }
    }

    pub const fn alias(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    fn matches(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// How parsing treats the first positional argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stop there (global flags, where the first positional is the verb).
    StopAtPositional,
    /// Keep going with urfave's reordering (verb flags).
    Reorder,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Str(String),
    Int(i64),
}

/// A flag error, worded as Go's `flag` package words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagError {
    NotDefined(String),
    NeedsArgument(String),
    BadSyntax(String),
    InvalidBool { name: String, value: String },
    InvalidValue { name: String, value: String },
    NotUtf8(String),
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDefined(n) => write!(f, "flag provided but not defined: -{n}"),
            Self::NeedsArgument(n) => write!(f, "flag needs an argument: -{n}"),
            Self::BadSyntax(a) => write!(f, "bad flag syntax: {a}"),
            Self::InvalidBool { name, value } => {
                write!(
                    f,
                    "invalid boolean value {value:?} for -{name}: parse error"
                )
            }
            Self::InvalidValue { name, value } => {
                write!(f, "invalid value {value:?} for flag -{name}: parse error")
            }
            Self::NotUtf8(what) => write!(f, "argument is not valid utf-8: {what}"),
        }
    }
}

impl std::error::Error for FlagError {}

/// The result of parsing: flag values by canonical name, positional
/// arguments, and where parsing stopped (`StopAtPositional`).
#[derive(Debug, Default)]
pub struct Parsed {
    flags: Vec<(&'static str, Value)>,
    pub positionals: Vec<OsString>,
    /// Index into the input of the first argument not consumed.
    pub rest: usize,
}

impl Parsed {
    /// The last value of a boolean flag; false when absent.
    pub fn bool(&self, name: &str) -> bool {
        self.last(name).is_some_and(|v| *v == Value::Bool(true))
    }

    /// The last value of a string flag.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.last(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Every value of a repeatable flag, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| match v {
                Value::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The last value of an integer flag.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.last(name) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    fn last(&self, name: &str) -> Option<&Value> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn set(&mut self, spec: &'static FlagSpec, value: Value) {
        if !spec.repeatable {
            self.flags.retain(|(n, _)| *n != spec.name);
        }
        self.flags.push((spec.name, value));
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A flag-looking argument split into name and optional `=value`.
/// `Ok(None)`: not a flag (a positional argument, or `--`).
fn split_flag(arg: &str) -> Result<Option<(&str, Option<&str>)>, FlagError> {
    let dashes = if arg.starts_with("--") { 2 } else { 1 };
    if arg.len() < 2 || !arg.starts_with('-') || arg == "--" {
        return Ok(None);
    }
    let body = &arg[dashes..];
    if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
        return Err(FlagError::BadSyntax(arg.to_string()));
    }
    Ok(Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    }))
}

fn to_str(arg: &OsStr) -> Result<&str, FlagError> {
    arg.to_str()
        .ok_or_else(|| FlagError::NotUtf8(arg.to_string_lossy().into_owned()))
}

/// Parse `args` against `specs`.
pub fn parse(
    specs: &'static [FlagSpec],
    args: &[OsString],
    mode: Mode,
) -> Result<Parsed, FlagError> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let raw = &args[i];
        let after_positional = !out.positionals.is_empty();
        // Non-UTF-8 arguments can only be positional.
        let Some(arg) = raw.to_str() else {
            if mode == Mode::StopAtPositional {
                break;
            }
            out.positionals.push(raw.clone());
            i += 1;
            continue;
        };
        if arg == "--" {
            i += 1;
            if mode == Mode::Reorder {
                out.positionals.extend(args[i..].iter().cloned());
                i = args.len();
            }
            break;
        }
        let split = match split_flag(arg) {
            Err(_) if after_positional => None,
            other => other?,
        };
        let Some((name, inline)) = split else {
            if mode == Mode::StopAtPositional {
                break;
            }
            out.positionals.push(raw.clone());
            i += 1;
            continue;
        };
        let Some(spec) = specs.iter().find(|s| s.matches(name)) else {
            if after_positional {
                out.positionals.push(raw.clone());
                i += 1;
                continue;
            }
            return Err(FlagError::NotDefined(name.to_string()));
        };
        i += 1;
        let value = match (spec.kind, inline) {
            (Kind::Bool, None) => Value::Bool(true),
            (Kind::Bool, Some(v)) => {
                Value::Bool(parse_bool(v).ok_or_else(|| FlagError::InvalidBool {
                    name: name.to_string(),
                    value: v.to_string(),
                })?)
            }
            (kind, inline) => {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        let next = args
                            .get(i)
                            .ok_or_else(|| FlagError::NeedsArgument(name.to_string()))?;
                        i += 1;
                        to_str(next)?
                    }
                };
                if kind == Kind::Int {
                    Value::Int(v.parse::<i64>().map_err(|_| FlagError::InvalidValue {
                        name: name.to_string(),
                        value: v.to_string(),
                    })?)
                } else {
                    Value::Str(v.to_string())
                }
            }
        };
        out.set(spec, value);
        // Like Go's ErrHelp: `--help` wins over whatever follows it.
        if spec.name == "help" && out.bool("help") {
            break;
        }
    }
    out.rest = i;
    Ok(out)
}
