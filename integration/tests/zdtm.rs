//! zdtm-style checkpoint/restore suite (after CRIU's test/zdtm).
//!
//! Every program in `integration/zdtm/*.c` builds some process state, says
//! `ready`, sleeps until SIGTERM and then checks that state itself, writing
//! `PASS` or `FAIL: why` to `<state dir>/result` (protocol: `zdtm/zdtm.h`).
//! For each program this file generates one test per mode:
//!
//! * `norst::<prog>`: no checkpoint at all: the self-checks pass natively.
//! * `neg::<prog>`: natively, once per corruption kind the program knows
//!   (see [`PROGRAMS`]): the program breaks that piece of its own state
//!   after waking up, and the result must be `FAIL`. A check that cannot
//!   fail is a defect.
//! * `kill::<prog>`: `stasis tree dump` (the tree dies), check the original
//!   is gone, `stasis tree restore`, SIGTERM the restored root, expect PASS.
//! * `leave_running::<prog>`: dump with `--leave-running`, check the
//!   original still runs (not stopped, not traced) and passes its own
//!   checks, then restore the image and expect PASS again.
//!
//! C/R pairs run only when listed in [`ENABLED`] (the lead enables them as
//! engine features land) or with `ZDTM_ALL=1`; others print SKIP and pass.
//! `ZDTM_ONLY=a,b` restricts every mode to the named programs.
//! `ZDTM_KEEP=1` keeps the run directories (state, image, logs) under
//! `target/tmp/zdtm/run/`.
//!
//! Every program is started as `unshare --pid --fork setsid <prog> <dir>`
//! in `<dir>`, with stdin `/dev/null`, stdout/stderr appended to a log file
//! and no other fd: it is pid 1 and a session leader in its own pid
//! namespace (like a container init), so the ids it sees survive a restore
//! into a fresh pid namespace. `--kill-child` is deliberately not used: it sets a parent
//! death signal on the program, which is process state the dump would
//! record (and which would fire when `stasis tree restore` exits). Cleanup
//! is done by SIGKILLing the namespace init instead.
//! The test process is a child subreaper, so restored roots (orphaned when
//! `stasis tree restore` exits) are reaped here.
//!
//! The harness (building, starting, driving stasis, reports) lives in
//! `stasis_integration::zdtm`, shared with `tests/faults.rs`.
//!
//! Run: `cargo build --release` (for the stasis binary), then
//! `cargo test --release -p stasis-integration --test zdtm -- --test-threads=1`.

use std::fs;
use std::path::{Path, PathBuf};

use stasis_integration::zdtm::{
    alive, become_subreaper, env_flag, find_prog, proc_state, proc_status_field, src_dir, Run,
    PROGRAMS,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// No checkpoint: the program's self-checks pass natively.
    Norst,
    /// Natively, with each corruption kind: the program must FAIL.
    Neg,
    /// Dump (the tree dies), restore, verify.
    Kill,
    /// Dump with --leave-running, verify the original, restore, verify.
    LeaveRunning,
}

/// The checkpoint/restore (program, mode) pairs that run by default.
/// Add pairs here as the engine learns the features a program needs;
/// `ZDTM_ALL=1` runs every pair regardless.
const ENABLED: &[(&str, Mode)] = &[
    ("static_loop", Mode::Kill),
    ("static_loop", Mode::LeaveRunning),
    ("dynamic_loop", Mode::Kill),
    ("dynamic_loop", Mode::LeaveRunning),
    ("threads_tls", Mode::Kill),
    ("threads_tls", Mode::LeaveRunning),
    ("avx_regs", Mode::Kill),
    ("avx_regs", Mode::LeaveRunning),
    ("signals", Mode::Kill),
    ("signals", Mode::LeaveRunning),
    ("fds", Mode::Kill),
    ("fds", Mode::LeaveRunning),
    ("pipe_data", Mode::Kill),
    ("pipe_data", Mode::LeaveRunning),
    ("sessions", Mode::Kill),
    ("sessions", Mode::LeaveRunning),
    ("zombie", Mode::Kill),
    ("zombie", Mode::LeaveRunning),
    ("stopped", Mode::Kill),
    ("stopped", Mode::LeaveRunning),
    ("maps_sparse", Mode::Kill),
    ("maps_sparse", Mode::LeaveRunning),
    ("vdso_rseq", Mode::Kill),
    ("vdso_rseq", Mode::LeaveRunning),
    ("file_maps", Mode::Kill),
    ("file_maps", Mode::LeaveRunning),
    ("shm_kinds", Mode::Kill),
    ("shm_kinds", Mode::LeaveRunning),
    ("brk_heap", Mode::Kill),
    ("brk_heap", Mode::LeaveRunning),
    ("seccomp", Mode::Kill),
    ("seccomp", Mode::LeaveRunning),
    ("creds", Mode::Kill),
    ("creds", Mode::LeaveRunning),
    ("anon_bulk", Mode::Kill),
    ("anon_bulk", Mode::LeaveRunning),
    ("event_fds", Mode::Kill),
    ("event_fds", Mode::LeaveRunning),
    ("inet_sockets", Mode::Kill),
    ("inet_sockets", Mode::LeaveRunning),
    ("unix_pairs", Mode::Kill),
    ("unix_pairs", Mode::LeaveRunning),
    ("async_owner", Mode::Kill),
    ("async_owner", Mode::LeaveRunning),
    ("unix_listener", Mode::Kill),
    ("unix_listener", Mode::LeaveRunning),
    ("file_locks", Mode::Kill),
    ("file_locks", Mode::LeaveRunning),
    ("posix_timers", Mode::Kill),
    ("posix_timers", Mode::LeaveRunning),
    ("sched_attrs", Mode::Kill),
    ("sched_attrs", Mode::LeaveRunning),
    ("vma_attrs", Mode::Kill),
    ("vma_attrs", Mode::LeaveRunning),
    ("tcp_loopback", Mode::Kill),
    ("tcp_loopback", Mode::LeaveRunning),
    ("unix_connected", Mode::Kill),
    ("unix_connected", Mode::LeaveRunning),
];


fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("zdtm")
}

/// `Some(reason)` when this (program, mode) should not run now.
fn skip_reason(name: &str, mode: Mode) -> Option<String> {
    if let Ok(only) = std::env::var("ZDTM_ONLY") {
        if !only.split(',').map(str::trim).any(|n| n == name) {
            return Some(format!("not in ZDTM_ONLY={only}"));
        }
    }
    if matches!(mode, Mode::Kill | Mode::LeaveRunning)
        && !ENABLED.contains(&(name, mode))
        && !env_flag("ZDTM_ALL")
    {
        return Some("not in ENABLED (set ZDTM_ALL=1 to run it anyway)".into());
    }
    None
}


// ---------------------------------------------------------------------------
// The modes

fn norst(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    run.expect_pass(pid, "program")?;
    run.reap(pid, "program")?;
    run.wait_unshare()
}

fn neg_one(run: &mut Run, kind: &str) -> Result<(), String> {
    fs::write(run.state.join("corrupt"), format!("{kind}\n")).map_err(|e| e.to_string())?;
    let pid = run.start()?;
    let text = run.finish(pid, "program")?;
    run.reap(pid, "program")?;
    run.wait_unshare()?;
    if !text.starts_with("FAIL: ") {
        return Err(format!(
            "corruption '{kind}' was not detected: result {:?}",
            text.trim_end()
        ));
    }
    Ok(())
}

fn cr_kill(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    run.dump(pid, false)?;
    // the dumped tree must be gone: unshare sees its child die
    run.wait_unshare()
        .map_err(|e| format!("original tree still alive after dump: {e}"))?;
    if alive(pid) {
        return Err(format!("original program {pid} still alive after dump"));
    }
    run.pids.retain(|&p| p != pid);
    if run.state.join("result").exists() {
        return Err("the original wrote a result during the dump".into());
    }
    let rpid = run.restore()?;
    check_fill(run)?;
    run.expect_pass(rpid, "restored root")?;
    run.reap(rpid, "restored root")
}

fn cr_leave_running(run: &mut Run) -> Result<(), String> {
    let pid = run.start()?;
    run.dump(pid, true)?;
    if !alive(pid) {
        return Err(format!(
            "original {pid} is not running after --leave-running (state {:?})",
            proc_state(pid)
        ));
    }
    let state = proc_state(pid);
    if matches!(state, Some('T' | 't')) {
        return Err(format!("original {pid} left stopped (state {state:?})"));
    }
    let tracer = proc_status_field(pid, "TracerPid");
    if tracer.as_deref() != Some("0") {
        return Err(format!(
            "original {pid} still traced (TracerPid {tracer:?})"
        ));
    }
    if run.state.join("result").exists() {
        return Err("the original wrote a result during the dump".into());
    }
    run.expect_pass(pid, "original")?;
    run.reap(pid, "original")?;
    run.wait_unshare()?;
    fs::remove_file(run.state.join("result")).map_err(|e| e.to_string())?;
    let rpid = run.restore()?;
    check_fill(run)?;
    run.expect_pass(rpid, "restored root")?;
    run.reap(rpid, "restored root")
}

/// The restore's own count of pages it filled, and of those filled with
/// `UFFDIO_COPY` (`stasis --debug tree restore` prints both). `anon_bulk`
/// must get its writable region A and its once-writable region C that way,
/// and, where page faults in it would allocate huge pages, not its
/// MADV_HUGEPAGE region B.
fn check_fill(run: &mut Run) -> Result<(), String> {
    let err = fs::read_to_string(run.dir.join("restore.stderr")).map_err(|e| format!("read restore.stderr: {e}"))?;
    let nums: Option<(u64, u64)> = err.lines().find_map(|l| {
        let rest = l.strip_prefix("restored ")?;
        let (all, rest) = rest.split_once(" pages (")?;
        let (uffd, _) = rest.split_once(" by userfaultfd copy)")?;
        Some((all.parse().ok()?, uffd.parse().ok()?))
    });
    let (all, uffd) = nums.ok_or_else(|| format!("restore did not report its page counts: {err:?}"))?;
    run.step(format!("restore filled {all} pages, {uffd} with UFFDIO_COPY"));
    if uffd > all {
        return Err(format!("{uffd} pages by userfaultfd out of {all}"));
    }
    if run.prog.name == "anon_bulk" {
        // A: 24 MiB less every 8th page; B: 8 MiB; C: 6 MiB.
        let (a, b, c) = ((24 << 20) / 4096 * 7 / 8, (8 << 20) / 4096, (6 << 20) / 4096);
        if uffd < a + c {
            return Err(format!("anon_bulk: {uffd} of {all} pages by userfaultfd; want A's and C's {}", a + c));
        }
        let thp = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !thp.contains("[never]") && uffd > all - b {
            return Err(format!("anon_bulk: {uffd} of {all} pages by userfaultfd, some of B's {b} (THP: {})", thp.trim()));
        }
    }
    Ok(())
}

fn run_test(name: &str, mode: Mode) {
    if let Some(why) = skip_reason(name, mode) {
        eprintln!("SKIP zdtm {name} [{mode:?}]: {why}");
        return;
    }
    become_subreaper();
    let prog = find_prog(name);
    if mode == Mode::Neg {
        let mut failures = Vec::new();
        for kind in prog.corruptions {
            let mut run = Run::new(prog, &format!("{mode:?}"), &format!("-{kind}"), &work_dir());
            if let Err(e) = neg_one(&mut run, kind) {
                failures.push(run.report(&e));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    }
    let mut run = Run::new(prog, &format!("{mode:?}"), "", &work_dir());
    let res = match mode {
        Mode::Norst => norst(&mut run),
        Mode::Kill => cr_kill(&mut run),
        Mode::LeaveRunning => cr_leave_running(&mut run),
        Mode::Neg => unreachable!(),
    };
    if let Err(e) = res {
        let report = run.report(&e);
        drop(run);
        panic!("{report}");
    }
}

macro_rules! zdtm_tests {
    ($($name:ident),* $(,)?) => {
        const GENERATED: &[&str] = &[$(stringify!($name)),*];
        mod norst {
            $( #[test] fn $name() { super::run_test(stringify!($name), super::Mode::Norst) } )*
        }
        mod neg {
            $( #[test] fn $name() { super::run_test(stringify!($name), super::Mode::Neg) } )*
        }
        mod kill {
            $( #[test] fn $name() { super::run_test(stringify!($name), super::Mode::Kill) } )*
        }
        mod leave_running {
            $( #[test] fn $name() { super::run_test(stringify!($name), super::Mode::LeaveRunning) } )*
        }
    };
}

zdtm_tests!(
    static_loop,
    dynamic_loop,
    threads_tls,
    avx_regs,
    signals,
    fds,
    pipe_data,
    sessions,
    zombie,
    stopped,
    maps_sparse,
    vdso_rseq,
    file_maps,
    shm_kinds,
    brk_heap,
    seccomp,
    creds,
    anon_bulk,
    event_fds,
    inet_sockets,
    unix_pairs,
    async_owner,
    unix_listener,
    file_locks,
    posix_timers,
    sched_attrs,
    vma_attrs,
    tcp_loopback,
    unix_connected,
);

/// PROGRAMS, the generated tests, ENABLED and the zdtm/*.c files agree.
#[test]
fn suite_is_consistent() {
    let listed: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
    assert_eq!(listed, GENERATED, "PROGRAMS and zdtm_tests! differ");
    let mut on_disk: Vec<String> = fs::read_dir(src_dir())
        .expect("read zdtm dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".c").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(sorted, on_disk, "PROGRAMS and zdtm/*.c differ");
    for (name, mode) in ENABLED {
        assert!(
            listed.contains(name),
            "ENABLED names unknown program {name}"
        );
        assert!(
            matches!(mode, Mode::Kill | Mode::LeaveRunning),
            "ENABLED only lists C/R modes"
        );
    }
    for p in PROGRAMS {
        assert!(
            !p.corruptions.is_empty(),
            "{} has no corruption kinds",
            p.name
        );
    }
}
