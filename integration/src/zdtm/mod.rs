//! The zdtm-style harness shared by `tests/zdtm.rs` (the suite) and
//! `tests/faults.rs` (failure atomicity): building the self-checking C
//! programs of `zdtm/`, starting one as pid 1 of its own pid namespace,
//! driving `stasis tree dump|restore` on it and collecting what happened
//! for the failure report. The protocol is described in `zdtm/README.md`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

mod procs;
pub use procs::*;

pub struct Prog {
    pub name: &'static str,
    /// Link statically (everything but `dynamic_loop`).
    pub static_link: bool,
    /// Extra gcc flags.
    pub cflags: &'static [&'static str],
    /// Kinds understood by `zdtm_corrupt()` in the program.
    pub corruptions: &'static [&'static str],
    /// Directory of the source, relative to this crate (`zdtm`, `faults`).
    pub dir: &'static str,
}

pub const fn prog(
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
        dir: "zdtm",
    }
}

/// Every test program; each needs `zdtm/<name>.c` and an entry in the
/// `zdtm_tests!` invocation at the bottom of this file.
pub const PROGRAMS: &[Prog] = &[
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
    prog("seccomp", true, &[], &["filters"]),
    prog("creds", true, &[], &["caps", "keepcaps", "nnp"]),
    prog("anon_bulk", true, &[], &["content", "uffd"]),
    prog("event_fds", true, &[], &["eventfd", "signalfd", "timerfd", "epoll"]),
    prog("inet_sockets", true, &[], &["port", "option", "peer"]),
    prog("unix_pairs", true, &[], &["data", "shut", "child"]),
    prog("async_owner", true, &[], &["owner", "sig"]),
    prog("unix_listener", true, &[], &["file", "mode"]),
    prog("file_locks", true, &[], &["posix", "flock", "ofd", "child"]),
    prog("posix_timers", true, &[], &["delete", "period", "thread"]),
    prog("sched_attrs", true, &[], &["nice", "slack", "thp", "io", "affinity"]),
    prog("vma_attrs", true, &[], &["unlock", "lockall"]),
    prog("tcp_loopback", true, &[], &["data", "close"]),
    prog("unix_connected", true, &[], &["data", "peer"]),
];


pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const STASIS_TIMEOUT: Duration = Duration::from_secs(120);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
pub const POLL: Duration = Duration::from_millis(10);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of `zdtm.h` and the suite's programs.
pub fn src_dir() -> PathBuf {
    manifest_dir().join("zdtm")
}

pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

pub fn find_prog(name: &str) -> &'static Prog {
    PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} is not in PROGRAMS"))
}


// ---------------------------------------------------------------------------
// Building the programs

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Compile `<dir>/<name>.c` into `<work>/bin` (once per test process;
/// again only when the source or zdtm.h is newer than the binary).
pub fn binary(p: &Prog, work: &Path) -> Result<PathBuf, String> {
    static CACHE: Mutex<Option<HashMap<PathBuf, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    let key = work.join(p.dir).join(p.name);
    cache.entry(key).or_insert_with(|| compile(p, work)).clone()
}

fn compile(p: &Prog, work: &Path) -> Result<PathBuf, String> {
    let src = manifest_dir().join(p.dir).join(format!("{}.c", p.name));
    let header = src_dir().join("zdtm.h");
    let bin_dir = work.join("bin");
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

pub fn stasis() -> Result<PathBuf, String> {
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
    std::panic::catch_unwind(crate::stasis_bin).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "stasis binary not found".into())
    })
}

// ---------------------------------------------------------------------------
// One run of one program

pub struct Run {
    pub prog: &'static Prog,
    /// What kind of run this is, for messages (the suite's mode).
    pub label: String,
    /// Where programs are built (`<work>/bin`).
    pub work: PathBuf,
    /// This run's directory: `state`, `img`, `log` and stasis outputs.
    pub dir: PathBuf,
    pub state: PathBuf,
    pub img: PathBuf,
    pub log: PathBuf,
    pub unshare: Option<Child>,
    /// Namespace inits to SIGKILL on cleanup (original and restored roots).
    pub pids: Vec<i32>,
    /// What happened so far, for the failure report.
    pub steps: Vec<String>,
    /// (label, stdout, stderr) of every stasis invocation.
    pub stasis_runs: Vec<(String, PathBuf, PathBuf)>,
}

/// How one `stasis` invocation ended.
#[derive(Debug)]
pub struct StasisOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// A fresh run directory `<work>/run/<prog>-<label><tag>-<pid>-<n>`.
    pub fn new(prog: &'static Prog, label: &str, tag: &str, work: &Path) -> Run {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = work.join("run").join(format!(
            "{}-{}{}-{}-{}",
            prog.name,
            label.to_lowercase(),
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
            label: label.to_string(),
            work: work.to_path_buf(),
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

    pub fn step(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  [{} {}] {s}", self.prog.name, self.label);
        self.steps.push(s);
    }

    /// Start the program in its own pid namespace; returns its host pid
    /// once it has written `ready`.
    pub fn start(&mut self) -> Result<i32, String> {
        let bin = binary(self.prog, &self.work)?;
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
    pub fn finish(&mut self, pid: i32, who: &str) -> Result<String, String> {
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

    pub fn expect_pass(&mut self, pid: i32, who: &str) -> Result<(), String> {
        let text = self.finish(pid, who)?;
        if text != "PASS\n" {
            return Err(format!("{who}: {}", text.trim_end()));
        }
        Ok(())
    }

    pub fn wait_unshare(&mut self) -> Result<(), String> {
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
    /// Run `stasis <args>` with a timeout; stdout/stderr go to files (a
    /// pipe could be inherited by the restored tree and never close).
    /// Fails unless it exits 0; returns its stdout.
    pub fn stasis(&mut self, label: &str, args: &[&str]) -> Result<String, String> {
        let o = self.stasis_outcome(label, args, &[])?;
        if !o.status.success() {
            return Err(format!("stasis {label} failed: {}", o.status));
        }
        Ok(o.stdout)
    }

    /// Start `stasis <args>` with extra environment variables; its
    /// stdout/stderr go to `<dir>/<label>.{stdout,stderr}`.
    pub fn stasis_spawn(&mut self, label: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Child, String> {
        let bin = stasis()?;
        let out = self.dir.join(format!("{label}.stdout"));
        let err = self.dir.join(format!("{label}.stderr"));
        self.stasis_runs
            .push((label.to_string(), out.clone(), err.clone()));
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&out).map_err(|e| e.to_string())?)
            .stderr(File::create(&err).map_err(|e| e.to_string())?);
        let env_s: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        self.step(format!("run {env_s}{} {}", bin.display(), args.join(" ")));
        cmd.spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))
    }

    /// Wait (with the timeout) for a stasis started by [`Run::stasis_spawn`].
    pub fn stasis_wait(&mut self, label: &str, mut child: Child) -> Result<StasisOutcome, String> {
        let start = Instant::now();
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
        let (out, err) = self
            .stasis_runs
            .iter()
            .rev()
            .find(|(l, _, _)| l == label)
            .map(|(_, o, e)| (o.clone(), e.clone()))
            .ok_or_else(|| format!("no stasis run labelled {label}"))?;
        Ok(StasisOutcome { status, stdout: read_lossy(&out), stderr: read_lossy(&err) })
    }

    /// Run `stasis <args>` with extra environment variables, whatever its
    /// exit status (timeouts are errors).
    pub fn stasis_outcome(&mut self, label: &str, args: &[&str], env: &[(&str, &str)]) -> Result<StasisOutcome, String> {
        let child = self.stasis_spawn(label, args, env)?;
        self.stasis_wait(label, child)
    }

    /// The arguments of `stasis tree dump` of `pid` into this run's image.
    pub fn dump_args(&self, pid: i32, leave_running: bool) -> Vec<String> {
        let mut args: Vec<String> = ["tree", "dump", "--pid", &pid.to_string(), "--image-path"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.img.to_str().expect("utf-8 path").to_string());
        if leave_running {
            args.push("--leave-running".into());
        }
        args
    }

    /// The arguments of `stasis tree restore` of this run's image.
    pub fn restore_args(&self) -> Vec<String> {
        vec!["tree".into(), "restore".into(), "--image-path".into(), self.img.to_str().expect("utf-8 path").to_string()]
    }

    pub fn dump(&mut self, pid: i32, leave_running: bool) -> Result<(), String> {
        let pid_s = pid.to_string();
        let img = self.img.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["tree", "dump", "--pid", &pid_s, "--image-path", &img];
        if leave_running {
            args.push("--leave-running");
        }
        self.stasis("dump", &args).map(|_| ())
    }

    pub fn restore(&mut self) -> Result<i32, String> {
        let img = self.img.to_str().expect("utf-8 path").to_string();
        let out = self.stasis("restore", &["--debug", "tree", "restore", "--image-path", &img])?;
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

    /// After a `--leave-running` dump: the original `pid` verifies itself
    /// and ends, then the image is restored and the restored tree verifies
    /// itself and ends.
    pub fn pass_original_then_restore(&mut self, pid: i32) -> Result<(), String> {
        self.expect_pass(pid, "original")?;
        self.reap(pid, "original")?;
        self.wait_unshare()?;
        fs::remove_file(self.state.join("result")).map_err(|e| e.to_string())?;
        let rpid = self.restore()?;
        self.expect_pass(rpid, "restored root")?;
        self.reap(rpid, "restored root")
    }

    /// After SIGTERM + result, the program exits: reap it.
    pub fn reap(&mut self, pid: i32, who: &str) -> Result<(), String> {
        let how = wait_gone(pid, EXIT_TIMEOUT).map_err(|e| format!("{who}: {e}"))?;
        self.step(format!("{who} {how}"));
        self.pids.retain(|&p| p != pid);
        Ok(())
    }

    pub fn report(&self, err: &str) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "zdtm {} [{}] FAILED: {err}", self.prog.name, self.label);
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

    pub fn inspect(&self) -> String {
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
