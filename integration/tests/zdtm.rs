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
//! Run: `cargo build --release` (for the stasis binary), then
//! `cargo test --release -p stasis-integration --test zdtm -- --test-threads=1`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

/// How one program is built and which corruptions its `neg` test runs.
struct Prog {
    name: &'static str,
    /// Link statically (everything but `dynamic_loop`).
    static_link: bool,
    /// Extra gcc flags.
    cflags: &'static [&'static str],
    /// Kinds understood by `zdtm_corrupt()` in the program.
    corruptions: &'static [&'static str],
}

const fn prog(
    name: &'static str,
    static_link: bool,
    cflags: &'static [&'static str],
    corruptions: &'static [&'static str],
) -> Prog {
    Prog {
        name,
        static_link,
        cflags,
        corruptions,
    }
}

/// Every test program; each needs `zdtm/<name>.c` and an entry in the
/// `zdtm_tests!` invocation at the bottom of this file.
const PROGRAMS: &[Prog] = &[
    prog("static_loop", true, &[], &["pattern", "counter", "pid"]),
    prog("dynamic_loop", false, &[], &["pattern", "counter", "maps"]),
    prog("threads_tls", true, &[], &["tls", "tid", "stop_thread"]),
    prog(
        "avx_regs",
        true,
        &["-mavx2"],
        &["ymm", "ymm_high", "gpr", "mxcsr", "x87"],
    ),
    prog(
        "signals",
        true,
        &[],
        &["mask", "pending", "action", "itimer", "altstack"],
    ),
    prog("fds", true, &[], &["offset", "cloexec", "close", "fifo"]),
    prog("pipe_data", true, &[], &["data", "size", "child"]),
    prog("sessions", true, &[], &["pgid", "sid"]),
    prog("zombie", true, &[], &["reap"]),
    prog("stopped", true, &[], &["cont"]),
    prog("maps_sparse", true, &[], &["content", "prot", "unmap"]),
    prog("vdso_rseq", true, &[], &["rseq", "clock"]),
    prog("file_maps", true, &[], &["private", "shared_copy"]),
    prog("shm_kinds", true, &[], &["unshare"]),
    prog("brk_heap", true, &[], &["brk", "pattern"]),
];

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
];

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
const STASIS_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn src_dir() -> PathBuf {
    manifest_dir().join("zdtm")
}

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("zdtm")
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn find_prog(name: &str) -> &'static Prog {
    PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is not in PROGRAMS"))
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
// Building the programs

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Compile `zdtm/<name>.c` (once per test process; again only when the
/// source or zdtm.h is newer than the binary).
fn binary(p: &Prog) -> Result<PathBuf, String> {
    static CACHE: Mutex<Option<HashMap<&'static str, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    cache.entry(p.name).or_insert_with(|| compile(p)).clone()
}

fn compile(p: &Prog) -> Result<PathBuf, String> {
    let src = src_dir().join(format!("{}.c", p.name));
    let header = src_dir().join("zdtm.h");
    let bin_dir = work_dir().join("bin");
    fs::create_dir_all(&bin_dir).map_err(|e| format!("mkdir {}: {e}", bin_dir.display()))?;
    let out = bin_dir.join(p.name);
    if let (Some(b), Some(s), Some(h)) = (mtime(&out), mtime(&src), mtime(&header)) {
        if b > s && b > h {
            return Ok(out);
        }
    }
    // build under a private name, then rename: other test processes may
    // be compiling the same program
    let tmp = bin_dir.join(format!(".{}.{}", p.name, std::process::id()));
    let mut cmd = Command::new("gcc");
    cmd.args(["-O2", "-Wall", "-g", "-pthread"]);
    if p.static_link {
        cmd.arg("-static");
    }
    cmd.args(p.cflags)
        .arg("-I")
        .arg(src_dir())
        .arg("-o")
        .arg(&tmp)
        .arg(&src);
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run gcc: {e} (install gcc and the static glibc)"))?;
    if !output.status.success() {
        return Err(format!(
            "gcc failed for {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if !output.stderr.is_empty() {
        eprintln!(
            "gcc warnings for {}:\n{}",
            p.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", out.display()))?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Process helpers

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain prctl on the calling process.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    });
}

fn kill(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn alive(pid: i32) -> bool {
    kill(pid, 0).is_ok() && proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// The state letter from /proc/<pid>/stat.
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn proc_status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Reap `pid` if it is our child (subreaper) or wait for it to vanish.
/// Returns a description of how it ended, or an error on timeout.
fn wait_gone(pid: i32, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(if libc::WIFEXITED(status) {
                format!("exited with {}", libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("status {status:#x}")
            });
        }
        if r < 0 && !alive(pid) && !Path::new(&format!("/proc/{pid}")).exists() {
            return Ok("gone (not our child)".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "pid {pid} still exists after {timeout:?} (state {:?})",
                proc_state(pid)
            ));
        }
        sleep(POLL);
    }
}

/// Every thread of `pid` and of its descendants: state, wchan, tracer.
fn proc_snapshot(pid: i32, depth: usize, out: &mut String) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        let _ = writeln!(out, "{:indent$}pid {pid}: gone", "", indent = depth * 2);
        return;
    };
    let mut tids: Vec<i32> = tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    let mut children = Vec::new();
    for tid in tids {
        let base = format!("/proc/{pid}/task/{tid}");
        let stat = fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
        let (comm, rest) = match (stat.find('('), stat.rfind(')')) {
            (Some(a), Some(b)) if a < b => (&stat[a + 1..b], stat[b + 1..].trim()),
            _ => ("?", ""),
        };
        let state = rest.split_whitespace().next().unwrap_or("?");
        let wchan = fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
        let status = fs::read_to_string(format!("{base}/status")).unwrap_or_default();
        let field = |f: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(f))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "{:indent$}{}{tid} ({comm}) {state} wchan={wchan} TracerPid={} NSpid={} SigBlk={} SigPnd={} ShdPnd={}",
            "",
            if tid == pid { "pid " } else { "  tid " },
            field("TracerPid:"),
            field("NSpid:"),
            field("SigBlk:"),
            field("SigPnd:"),
            field("ShdPnd:"),
            indent = depth * 2
        );
        if let Ok(stack) = fs::read_to_string(format!("{base}/stack")) {
            for l in stack.lines().take(8) {
                let _ = writeln!(out, "{:indent$}    {l}", "", indent = depth * 2);
            }
        }
        if let Ok(c) = fs::read_to_string(format!("{base}/children")) {
            children.extend(c.split_whitespace().filter_map(|s| s.parse::<i32>().ok()));
        }
    }
    if depth < 4 {
        for c in children {
            proc_snapshot(c, depth + 1, out);
        }
    }
}

fn read_lossy(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<{}: {e}>", p.display()),
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn stasis() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("STASIS_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("STASIS_BIN={} is not a file", bin.display()))
        };
    }
    // the shared lookup (newest of target/{release,debug}/stasis, freshness
    // check) panics with a clear message; turn that into an error here
    std::panic::catch_unwind(stasis_integration::stasis_bin).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "stasis binary not found".into())
    })
}

// ---------------------------------------------------------------------------
// One run of one program

struct Run {
    prog: &'static Prog,
    mode: Mode,
    dir: PathBuf,
    state: PathBuf,
    img: PathBuf,
    log: PathBuf,
    unshare: Option<Child>,
    /// Namespace inits to SIGKILL on cleanup (original and restored roots).
    pids: Vec<i32>,
    /// What happened so far, for the failure report.
    steps: Vec<String>,
    /// (label, stdout, stderr) of every stasis invocation.
    stasis_runs: Vec<(String, PathBuf, PathBuf)>,
}

impl Run {
    fn new(prog: &'static Prog, mode: Mode, tag: &str) -> Run {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = work_dir().join("run").join(format!(
            "{}-{}{}-{}-{}",
            prog.name,
            format!("{mode:?}").to_lowercase(),
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let state = dir.join("state");
        let img = dir.join("img");
        fs::create_dir_all(&state).expect("create state dir");
        fs::create_dir_all(&img).expect("create image dir");
        Run {
            prog,
            mode,
            log: dir.join("log"),
            dir,
            state,
            img,
            unshare: None,
            pids: Vec::new(),
            steps: Vec::new(),
            stasis_runs: Vec::new(),
        }
    }

    fn step(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  [{} {:?}] {s}", self.prog.name, self.mode);
        self.steps.push(s);
    }

    /// Start the program in its own pid namespace; returns its host pid
    /// once it has written `ready`.
    fn start(&mut self) -> Result<i32, String> {
        let bin = binary(self.prog)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "setsid"])
            .arg(&bin)
            .arg(&self.state)
            .current_dir(&self.state)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Only 0, 1, 2 reach the program: fds leaked into the test process
        // (a jobserver pipe, the caller's plumbing) would otherwise become
        // part of every dumped tree. CLOEXEC rather than close, so that
        // std's exec-error pipe keeps working.
        // SAFETY: close_range is async-signal-safe; no allocation here.
        unsafe {
            cmd.pre_exec(|| {
                let r = libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn unshare: {e}"))?;
        let upid = child.id() as i32;
        self.unshare = Some(child);
        self.step(format!("started {} (unshare pid {upid})", bin.display()));

        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = self.state.join("ready");
        while !ready.exists() {
            if let Some(st) = self
                .unshare
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("the program exited before `ready`: unshare {st}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no `ready` after {READY_TIMEOUT:?}"));
            }
            sleep(POLL);
        }
        let children = fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
            .map_err(|e| format!("read children of unshare: {e}"))?;
        let pid: i32 = children
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unshare {upid} has no child: {children:?}"))?;
        self.pids.push(pid);
        self.step(format!("ready: program pid {pid}"));
        Ok(pid)
    }

    /// SIGTERM `pid` and wait for `result`.
    fn finish(&mut self, pid: i32, who: &str) -> Result<String, String> {
        if !alive(pid) {
            return Err(format!("{who} (pid {pid}) is not alive before SIGTERM"));
        }
        kill(pid, libc::SIGTERM).map_err(|e| format!("kill {who} {pid}: {e}"))?;
        self.step(format!("SIGTERM sent to {who} (pid {pid})"));
        let result = self.state.join("result");
        let deadline = Instant::now() + RESULT_TIMEOUT;
        while !result.exists() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "no result from {who} {RESULT_TIMEOUT:?} after SIGTERM (state {:?}, wchan {:?})",
                    proc_state(pid),
                    fs::read_to_string(format!("/proc/{pid}/wchan")).ok()
                ));
            }
            if !Path::new(&format!("/proc/{pid}")).exists() {
                sleep(POLL); // the rename may just have happened
                if !result.exists() {
                    return Err(format!("{who} (pid {pid}) died without writing a result"));
                }
            }
            sleep(POLL);
        }
        let text = read_lossy(&result);
        self.step(format!("{who} result: {}", text.trim_end()));
        Ok(text)
    }

    fn expect_pass(&mut self, pid: i32, who: &str) -> Result<(), String> {
        let text = self.finish(pid, who)?;
        if text != "PASS\n" {
            return Err(format!("{who}: {}", text.trim_end()));
        }
        Ok(())
    }

    fn wait_unshare(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let Some(child) = self.unshare.as_mut() else {
            return Ok(());
        };
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.unshare = None;
                    self.step(format!("unshare exited: {st}"));
                    return Ok(());
                }
                Ok(None) if Instant::now() < deadline => sleep(POLL),
                Ok(None) => return Err(format!("unshare still running after {EXIT_TIMEOUT:?}")),
                Err(e) => return Err(format!("wait unshare: {e}")),
            }
        }
    }

    /// Run `stasis <args>` with a timeout; stdout/stderr go to files (a
    /// pipe could be inherited by the restored tree and never close).
    fn stasis(&mut self, label: &str, args: &[&str]) -> Result<String, String> {
        let bin = stasis()?;
        let out = self.dir.join(format!("{label}.stdout"));
        let err = self.dir.join(format!("{label}.stderr"));
        self.stasis_runs
            .push((label.to_string(), out.clone(), err.clone()));
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).map_err(|e| e.to_string())?)
            .stderr(File::create(&err).map_err(|e| e.to_string())?);
        self.step(format!("run {} {}", bin.display(), args.join(" ")));
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if start.elapsed() > STASIS_TIMEOUT {
                let mut snap = String::new();
                proc_snapshot(child.id() as i32, 0, &mut snap);
                for &pid in &self.pids {
                    proc_snapshot(pid, 0, &mut snap);
                }
                self.step(format!("stasis {label} hangs; processes:\n{snap}"));
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("stasis {label} timed out after {STASIS_TIMEOUT:?}"));
            }
            sleep(POLL);
        };
        self.step(format!("stasis {label}: {status} in {:?}", start.elapsed()));
        if !status.success() {
            return Err(format!("stasis {label} failed: {status}"));
        }
        Ok(read_lossy(&out))
    }

    fn dump(&mut self, pid: i32, leave_running: bool) -> Result<(), String> {
        let pid_s = pid.to_string();
        let img = self.img.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["tree", "dump", "--pid", &pid_s, "--image-path", &img];
        if leave_running {
            args.push("--leave-running");
        }
        self.stasis("dump", &args).map(|_| ())
    }

    fn restore(&mut self) -> Result<i32, String> {
        let img = self.img.to_str().expect("utf-8 path").to_string();
        let out = self.stasis("restore", &["tree", "restore", "--image-path", &img])?;
        let pid: i32 = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("restore did not print a pid on stdout: {out:?}"))?;
        self.pids.push(pid);
        self.step(format!("restored root: host pid {pid}"));
        if !alive(pid) {
            return Err(format!(
                "restored root {pid} is not alive (state {:?})",
                proc_state(pid)
            ));
        }
        Ok(pid)
    }

    /// After SIGTERM + result, the program exits: reap it.
    fn reap(&mut self, pid: i32, who: &str) -> Result<(), String> {
        let how = wait_gone(pid, EXIT_TIMEOUT).map_err(|e| format!("{who}: {e}"))?;
        self.step(format!("{who} {how}"));
        self.pids.retain(|&p| p != pid);
        Ok(())
    }

    fn report(&self, err: &str) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "zdtm {} [{:?}] FAILED: {err}", self.prog.name, self.mode);
        let _ = writeln!(r, "--- steps:");
        for s in &self.steps {
            let _ = writeln!(r, "  {s}");
        }
        let result = self.state.join("result");
        if result.exists() {
            let _ = writeln!(r, "--- result: {}", read_lossy(&result).trim_end());
        }
        let _ = writeln!(r, "--- program log ({}):", self.log.display());
        let _ = writeln!(r, "{}", tail(&read_lossy(&self.log), 6000));
        for (label, out, err) in &self.stasis_runs {
            let _ = writeln!(
                r,
                "--- stasis {label} stdout:\n{}",
                tail(&read_lossy(out), 4000)
            );
            let _ = writeln!(
                r,
                "--- stasis {label} stderr:\n{}",
                tail(&read_lossy(err), 8000)
            );
        }
        for &pid in &self.pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let mut snap = String::new();
                proc_snapshot(pid, 0, &mut snap);
                let _ = writeln!(r, "--- processes of tree {pid}:\n{snap}");
            }
        }
        if !self.stasis_runs.is_empty()
            && fs::read_dir(&self.img).is_ok_and(|mut d| d.next().is_some())
        {
            let _ = writeln!(r, "--- stasis inspect {}:", self.img.display());
            let _ = writeln!(r, "{}", tail(&self.inspect(), 8000));
        }
        if env_flag("ZDTM_KEEP") {
            let _ = writeln!(r, "--- kept {}", self.dir.display());
        } else {
            let _ = writeln!(r, "--- (set ZDTM_KEEP=1 to keep state, image and logs)");
        }
        r
    }

    fn inspect(&self) -> String {
        let Ok(bin) = stasis() else {
            return "<no stasis binary>".into();
        };
        let out = self.dir.join("inspect.out");
        let Ok(f) = File::create(&out) else {
            return "<cannot create inspect.out>".into();
        };
        let Ok(f2) = f.try_clone() else {
            return "<dup failed>".into();
        };
        let child = Command::new(bin)
            .arg("inspect")
            .arg(&self.img)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn();
        let Ok(mut child) = child else {
            return "<cannot run stasis inspect>".into();
        };
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st.to_string(),
                Ok(None) if start.elapsed() < Duration::from_secs(30) => sleep(POLL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break "timed out".into();
                }
            }
        };
        format!("({status})\n{}", read_lossy(&out))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // the namespace init: SIGKILL takes the whole namespace down
            let _ = kill(pid, libc::SIGKILL);
        }
        if let Some(mut c) = self.unshare.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for &pid in &self.pids {
            let _ = wait_gone(pid, Duration::from_secs(5));
        }
        if env_flag("ZDTM_KEEP") {
            eprintln!("  kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
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
    run.expect_pass(rpid, "restored root")?;
    run.reap(rpid, "restored root")
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
            let mut run = Run::new(prog, mode, &format!("-{kind}"));
            if let Err(e) = neg_one(&mut run, kind) {
                failures.push(run.report(&e));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    }
    let mut run = Run::new(prog, mode, "");
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
