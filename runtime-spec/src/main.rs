//! stasis: a drop-in for runc with its own checkpoint/restore engine.
//!
//! `checkpoint`, `restore` and stasis' own engine verbs run here; every other
//! runc verb is exec'd, unchanged, in the underlying runtime (runc unless
//! `--runtime-binary` or `$STASIS_RUNTIME` says otherwise).

mod archive;
mod cli;
mod commands;
mod container;
mod cr_archive;
mod delegate;
mod image_dir;
mod logging;
mod oplock;
mod restore_bundle;
mod rootfs_diff;
mod stats;
mod tmpfs;
mod waiter;

use std::ffi::OsString;
use std::io::Write;

use cli::{Action, Usage, UsageError};
use logging::Logger;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = run(&args);
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn run(args: &[OsString]) -> i32 {
    let cmdline = match cli::parse_global(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&Logger::stderr(), &e),
    };
    let global = &cmdline.global;
    let logger = Logger::new(global);
    let action = match cmdline.action() {
        Ok(a) => a,
        Err(e) => return usage_error(&logger, &e),
    };
    let result = match action {
        Action::Help(usage) => {
            print!("{}", cli::usage::render(usage));
            Ok(0)
        }
        Action::Version => {
            println!("stasis version {}", env!("CARGO_PKG_VERSION"));
            println!("runtime: {}", global.runtime().to_string_lossy());
            Ok(0)
        }
        // A restored container has stasis state to remove with it.
        Action::Delegate { verb, args } if verb == "delete" => commands::delete::run(global, &args, &logger),
        Action::Delegate { verb, args } => Err(delegate::exec(global, &verb, &args, &logger)),
        Action::Checkpoint(opts) => commands::checkpoint::run(global, &opts),
        Action::Restore(opts) => commands::restore::run(global, &opts),
        Action::TreeDump(opts) => commands::tree::dump(global, &opts),
        Action::TreeRestore(opts) => commands::tree::restore(global, &opts),
        Action::Inspect(opts) => commands::inspect::run(global, &opts),
        Action::RestoreStub(o) => {
            stasis_checkpoint::restore::container_stub_main(&o.image_dir, o.ready_fd, o.hold_fd)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            logger.error(&format!("{e:#}"));
            1
        }
    }
}

/// runc's way: "Incorrect Usage: …" and the usage text, then the error
/// through the log path.
fn usage_error(logger: &Logger, e: &UsageError) -> i32 {
    if e.usage != Usage::None {
        eprint!(
            "Incorrect Usage: {}\n\n{}",
            e.message,
            cli::usage::render(e.usage)
        );
    }
    logger.error(&e.message);
    e.exit_code
}
