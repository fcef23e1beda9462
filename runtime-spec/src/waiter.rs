//! A foreground `restore` waits for the container's init like `runc run`:
//! signals sent to stasis go on to the init, and its exit status becomes
//! ours (128+N when killed by signal N).

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Signals passed on to the container (the ones a terminal or supervisor
/// sends; SIGCHLD is ours, SIGKILL/SIGSTOP cannot be caught).
const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Waits for `init`, which must be our child; returns its exit code.
pub fn wait_forwarding_signals(init: i32) -> i32 {
    let pid = Pid::from_raw(init);
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    // Blocked here, taken by the forwarding thread with sigwait. Threads
    // started from now on inherit the mask, so none of them takes a signal
    // meant for the container.
    let forwarding = set.thread_block().is_ok();
    if forwarding {
        std::thread::spawn(move || loop {
            if let Ok(sig) = set.wait() {
                let _ = kill(pid, sig);
            }
        });
    }
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // Not our child (no subreaper) or already reaped: nothing to report.
            Err(_) => return 0,
        }
    }
}
