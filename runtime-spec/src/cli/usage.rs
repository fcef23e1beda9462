//! Help texts, laid out like urfave/cli's so that they read like runc's.

use std::fmt::Write;

use super::flags::{FlagSpec, Kind};
use super::global::GLOBAL_FLAGS;
use super::{Usage, VerbSpec, DELEGATED_VERBS, OWN_VERBS};

/// The text for `usage`; empty for `Usage::None`.
pub fn render(usage: Usage) -> String {
    match usage {
        Usage::None => String::new(),
        Usage::Global => global(),
        Usage::Verb(v) => verb(v),
    }
}

fn flag_line(spec: &FlagSpec) -> String {
    let value = if spec.kind == Kind::Bool {
        ""
    } else {
        " value"
    };
    let mut names = format!("--{}{value}", spec.name);
    for alias in spec.aliases {
        let dashes = if alias.len() == 1 { "-" } else { "--" };
        let _ = write!(names, ", {dashes}{alias}{value}");
    }
    format!("   {names:<28} {}\n", spec.help)
}

fn global() -> String {
    let mut s = String::from(
        "NAME:\n   stasis - a drop-in runc wrapper with its own checkpoint/restore engine\n\n\
         USAGE:\n   stasis [global options] command [command options] [arguments...]\n\n",
    );
    let _ = write!(s, "VERSION:\n   {}\n\n", env!("CARGO_PKG_VERSION"));
    s.push_str("COMMANDS (stasis' own):\n");
    for v in OWN_VERBS {
        let _ = writeln!(s, "   {:<14} {}", v.name, v.about);
    }
    s.push_str(
        "\nCOMMANDS (delegated unchanged to the underlying runtime, see --runtime-binary):\n   ",
    );
    s.push_str(&DELEGATED_VERBS.join(", "));
    s.push_str("\n   help, h        show help for a command\n\nGLOBAL OPTIONS:\n");
    for f in GLOBAL_FLAGS {
        s.push_str(&flag_line(f));
    }
    s
}

fn verb(v: &VerbSpec) -> String {
    let mut s = format!(
        "NAME:\n   stasis {} - {}\n\nUSAGE:\n   stasis {}",
        v.name, v.about, v.name
    );
    if v.flags.len() > 1 {
        s.push_str(" [command options]");
    }
    if !v.args.is_empty() {
        let _ = write!(s, " {}", v.args);
    }
    s.push_str("\n\nOPTIONS:\n");
    for f in v.flags {
        s.push_str(&flag_line(f));
    }
    s
}
