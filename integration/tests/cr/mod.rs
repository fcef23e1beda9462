//! Helpers of the container checkpoint/restore tests: the counter workload
//! (`integration/workloads/counter.c`), its progress, detached commands
//! whose stdout the test keeps reading, and "nothing left behind" checks.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use stasis_integration::{build_counter, Bundle, Runtime};

pub const WAIT: Duration = Duration::from_secs(10);

/// A busybox bundle running the counter (compiled static into its rootfs).
pub fn counter_bundle() -> Bundle {
    let bundle = Bundle::busybox(&["/bin/counter"]);
    build_counter(&bundle.rootfs().join("bin/counter"));
    bundle
}

/// One line of the counter: `iter=N pid=P errors=E`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub iter: u64,
    pub pid: i32,
    pub errors: u64,
}

impl Progress {
    pub fn parse(line: &str) -> Option<Self> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        Some(Self {
            iter: field("iter")?.parse().ok()?,
            pid: field("pid")?.parse().ok()?,
            errors: field("errors")?.parse().ok()?,
        })
    }
}

/// The counter's state file (`/tmp/state`) under the container root
/// `root` (a rootfs, or `/proc/PID/root`), if written yet.
pub fn progress_in(root: &Path) -> Option<Progress> {
    Progress::parse(&fs::read_to_string(root.join("tmp/state")).ok()?)
}

/// The counter's state file in `bundle`, if written yet.
pub fn progress(bundle: &Bundle) -> Option<Progress> {
    progress_in(&bundle.rootfs())
}

/// Waits until the counter under the container root `root` is past `iter`.
#[track_caller]
pub fn wait_beyond_in(root: &Path, iter: u64) -> Progress {
    let start = Instant::now();
    loop {
        if let Some(p) = progress_in(root).filter(|p| p.iter > iter) {
            return p;
        }
        assert!(
            start.elapsed() < WAIT,
            "counter not past {iter}: {:?}",
            progress_in(root)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the counter in `bundle` is past `iter`.
#[track_caller]
pub fn wait_beyond(bundle: &Bundle, iter: u64) -> Progress {
    wait_beyond_in(&bundle.rootfs(), iter)
}

/// Asserts the counter does not move for a while (a paused container).
#[track_caller]
pub fn assert_still(bundle: &Bundle) {
    let p = progress(bundle);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(progress(bundle), p, "the counter moved");
}

/// A detached `run`/`restore`: its exit code and stderr, and the read end
/// of the stdout pipe it handed to the container.
pub struct Detached {
    pub code: i32,
    pub stderr: String,
    out: fs::File,
    buf: String,
    _err: OwnedFd,
}

/// Runs `rt args…` with fresh stdout/stderr pipes, as containerd's shim
/// does, and waits only for the command itself.
pub fn detached<S: AsRef<std::ffi::OsStr>>(rt: &Runtime, args: &[S]) -> Detached {
    detached_env(rt, args, &[])
}

pub fn detached_env<S: AsRef<std::ffi::OsStr>>(
    rt: &Runtime,
    args: &[S],
    env: &[(&str, &str)],
) -> Detached {
    let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
    let (err_r, err_w) = nix::unistd::pipe().expect("pipe");
    let mut cmd = rt.command(args);
    cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().expect("run the runtime");
    for fd in [&out_r, &err_r] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("O_NONBLOCK");
    }
    let mut stderr = String::new();
    let _ = fs::File::from(err_r.try_clone().expect("dup")).read_to_string(&mut stderr);
    Detached {
        code: status.code().unwrap_or(-1),
        stderr,
        out: out_r.into(),
        buf: String::new(),
        _err: err_r,
    }
}

impl Detached {
    /// The next stdout line (without its newline) within `WAIT`.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let start = Instant::now();
        loop {
            if let Some(i) = self.buf.find('\n') {
                let line = self.buf[..i].to_string();
                self.buf.drain(..=i);
                return line;
            }
            let mut chunk = [0u8; 4096];
            match self.out.read(&mut chunk) {
                Ok(n @ 1..) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
            assert!(
                start.elapsed() < WAIT,
                "no stdout line within {WAIT:?} (have {:?})",
                self.buf
            );
        }
    }
}

/// Host pids of the processes whose root directory is `rootfs` (the same
/// inode: a container's root reads as "/" through /proc/PID/root).
pub fn processes_in(rootfs: &Path) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let want = id(rootfs).expect("stat rootfs");
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if id(&entry.path().join("root")) == Some(want) {
            out.push(pid);
        }
    }
    out
}

/// stasis' private directories of container `id` (under any state root).
pub fn private_dirs(id: &str) -> Vec<PathBuf> {
    let Ok(roots) = fs::read_dir("/run/stasis") else {
        return Vec::new();
    };
    roots
        .flatten()
        .map(|r| r.path().join(id))
        .filter(|p| p.exists())
        .collect()
}

/// Nothing of container `id` in `bundle` remains: not in the runtime's
/// `list`, no process in its rootfs, no stasis directory.
#[track_caller]
pub fn assert_gone(rt: &Runtime, id: &str, bundle: &Bundle) {
    let list = rt.exec(&["list", "-q"]).ok();
    assert!(
        !list.stdout.lines().any(|l| l == id),
        "{id} still listed: {list:?}"
    );
    assert_no_processes_left(bundle, id);
    assert_eq!(
        private_dirs(id),
        Vec::<PathBuf>::new(),
        "stasis directory left"
    );
}

/// Waits (up to WAIT) until no process runs from `bundle`'s rootfs.
#[track_caller]
pub fn assert_no_processes_left(bundle: &Bundle, id: &str) {
    let start = Instant::now();
    while !processes_in(&bundle.rootfs()).is_empty() && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_in(&bundle.rootfs()),
        Vec::<i32>::new(),
        "{id}: processes left in the rootfs"
    );
}

/// `args` as owned strings, paths included.
pub fn argv(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// `run -d --bundle B ID`, checked, with the counter under way.
#[track_caller]
pub fn run_counter(rt: &Runtime, bundle: &Bundle, id: &str) -> Detached {
    let run = detached(
        rt,
        &argv(&[&"run", &"-d", &"--bundle", &bundle.path(), &id]),
    );
    assert_eq!(run.code, 0, "run: {}", run.stderr);
    wait_beyond(bundle, 2);
    run
}

/// The argv of `restore -d --image-path I --bundle B [extra…] ID`.
pub fn restore_argv(image: &Path, bundle: &Bundle, id: &str, extra: &[&str]) -> Vec<OsString> {
    let mut args = argv(&[
        &"restore",
        &"-d",
        &"--image-path",
        &image,
        &"--bundle",
        &bundle.path(),
    ]);
    args.extend(extra.iter().map(OsString::from));
    args.push(id.into());
    args
}

/// `restore -d --image-path I --bundle B [extra…] ID`, detached.
pub fn restore(rt: &Runtime, image: &Path, bundle: &Bundle, id: &str, extra: &[&str]) -> Detached {
    detached(rt, &restore_argv(image, bundle, id, extra))
}
