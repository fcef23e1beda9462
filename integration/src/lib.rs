//! Shared helpers for the end-to-end tests: find the `stasis` binary, build
//! busybox bundles, drive a runtime (stasis or plain runc) through its
//! command line with a private `--root`, and clean containers up.
//!
//! The tests need root, `runc`, `/bin/busybox` and a built `stasis`
//! (`make deps build`). They fail loudly when any of these is missing: a
//! skipped container test would hide exactly the regressions they exist for.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

pub mod containerd;
pub mod oci_image;
pub mod podman;
pub mod zdtm;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use serde_json::Value;

/// The workspace checkout this crate lives in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The newest modification time of the files (not directories) under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The `stasis` binary under test: `$STASIS_BIN`, else the newer of
/// `<target>/release/stasis` and `<target>/debug/stasis`, which must not be
/// older than the files in `runtime-spec/src/` (a stale binary would test
/// old code; `cargo test -p stasis` or `make build` rebuilds it).
pub fn stasis_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STASIS_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "STASIS_BIN={} is not a file", bin.display());
            return bin;
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        // Builds are static for the x86_64-unknown-linux-gnu target (see
        // .cargo/config.toml); the plain profile dirs are kept as fallbacks.
        let bin = ["x86_64-unknown-linux-gnu/release", "x86_64-unknown-linux-gnu/debug", "release", "debug"]
            .iter()
            .map(|profile| target.join(profile).join("stasis"))
            .filter_map(|p| mtime(&p).map(|t| (t, p)))
            .max()
            .map(|(_, p)| p)
            .unwrap_or_else(|| {
                panic!(
                    "no stasis binary under {}/{{release,debug}}: run `make build` \
                     (cargo build --release -p stasis) first, or set STASIS_BIN",
                    target.display()
                )
            });
        let sources = newest_mtime(&workspace_root().join("runtime-spec/src"))
            .max(newest_mtime(&workspace_root().join("checkpoint/src")));
        assert!(
            mtime(&bin) >= sources,
            "{} is older than its sources: rebuild it (make build) or set STASIS_BIN",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Compiles the counter workload (`integration/workloads/counter.c`, which
/// checks its own heap, 4 MiB or argv[2] MiB, every iteration and reports
/// `iter=N pid=P errors=E`) statically into `out`.
pub fn build_counter(out: &Path) {
    build_workload("counter", out)
}

/// Compiles `integration/workloads/<name>.c` statically into `out`.
pub fn build_workload(name: &str, out: &Path) {
    let src = workspace_root().join(format!("integration/workloads/{name}.c"));
    let gcc = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(out)
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .expect("run gcc (make deps installs it)");
    assert!(
        gcc.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&gcc.stderr)
    );
}

/// Root, runc and busybox; checked once, fatal when missing.
pub fn require_prerequisites() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the integration tests run real containers and need root"
        );
        assert!(
            Path::new("/bin/busybox").is_file(),
            "/bin/busybox is missing: install busybox-static (make deps)"
        );
        let runc = Command::new("runc")
            .arg("--version")
            .stdin(Stdio::null())
            .output();
        assert!(
            runc.is_ok_and(|o| o.status.success()),
            "`runc --version` failed: install runc (make deps)"
        );
    });
}

/// A container id unique to this test process; ids made with prefixes of
/// equal length have equal length, which keeps `list` columns comparable.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let template = std::env::temp_dir().join(format!("{prefix}.XXXXXX"));
        let path = nix::unistd::mkdtemp(&template)
            .unwrap_or_else(|e| panic!("mkdtemp {}: {e}", template.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The applets of `/bin/busybox` (each a link to it in a rootfs' `bin/`).
pub fn busybox_applets() -> Vec<String> {
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect()
}

/// An OCI bundle whose rootfs is busybox and its applets.
#[derive(Debug)]
pub struct Bundle {
    dir: TempDir,
}

impl Bundle {
    /// `runc spec`, then: `process.args = args`, no terminal, writable root.
    pub fn busybox(args: &[&str]) -> Self {
        require_prerequisites();
        let dir = TempDir::new("stasis-bundle");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "dev", "etc", "proc", "root", "sys", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).expect("create rootfs dirs");
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
        for applet in busybox_applets() {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
        let spec = Command::new("runc")
            .arg("spec")
            .arg("--bundle")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run `runc spec`");
        assert!(
            spec.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&spec.stderr)
        );
        let bundle = Self { dir };
        bundle.edit_config(|c| {
            c["process"]["terminal"] = Value::Bool(false);
            c["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
            c["root"]["readonly"] = Value::Bool(false);
        });
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// Read, change and write back `config.json`.
    pub fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        let file = self.path().join("config.json");
        let text = fs::read_to_string(&file).expect("read config.json");
        let mut config: Value = serde_json::from_str(&text).expect("parse config.json");
        edit(&mut config);
        let text = serde_json::to_string_pretty(&config).expect("serialise config.json");
        fs::write(&file, text).expect("write config.json");
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    fn from_output(o: std::process::Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics, with the output, unless the exit code is 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }
}

/// A runtime driven through its runc-style command line, with a private
/// state root so tests never see each other's containers.
#[derive(Debug)]
pub struct Runtime {
    pub name: &'static str,
    bin: PathBuf,
    root: TempDir,
}

impl Runtime {
    pub fn new(name: &'static str, bin: PathBuf) -> Self {
        require_prerequisites();
        Self {
            name,
            bin,
            root: TempDir::new(&format!("stasis-root-{name}")),
        }
    }

    pub fn stasis() -> Self {
        Self::new("stasis", stasis_bin())
    }

    pub fn runc() -> Self {
        Self::new("runc", PathBuf::from("runc"))
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `<bin> --root <root> args…`, stdin from /dev/null.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Run to completion and capture stdout/stderr.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        let out = self.command(args).output();
        Outcome::from_output(
            out.unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display())),
        )
    }

    /// `state ID`, parsed; panics when it fails.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.exec(&["state", id]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{} state: {e}: {out:?}", self.name))
    }

    /// Poll `state ID` until its status is `want`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let state = self.state(id);
            if state["status"] == want {
                return state;
            }
            assert!(
                start.elapsed() < timeout,
                "{} {id}: still {} after {timeout:?}",
                self.name,
                state["status"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `run -d --bundle B ID` with stdout/stderr on pipes, as containerd's
    /// shim does. `run -d` hands its stdio to the container, so the pipes'
    /// read ends are held by the returned guard until the container is gone
    /// (waiting for EOF would hang while the container lives).
    pub fn run_detached(&self, bundle: &Bundle, id: &str) -> Container<'_> {
        let args = [
            OsString::from("run"),
            "-d".into(),
            "--bundle".into(),
            bundle.path().into(),
            id.into(),
        ];
        let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
        let (err_r, err_w) = nix::unistd::pipe().expect("pipe");
        let status = self
            .command(&args)
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let run = Outcome {
            code: status.code().unwrap_or(-1),
            stdout: drain(&out_r),
            stderr: drain(&err_r),
        };
        Container {
            rt: self,
            id: id.to_string(),
            run,
            _pipes: vec![out_r, err_r],
        }
    }

    /// Take charge of cleaning up a container created some other way.
    pub fn adopt(&self, id: &str) -> Container<'_> {
        let run = Outcome {
            code: 0,
            stdout: String::new(),
            stderr: String::new(),
        };
        Container {
            rt: self,
            id: id.to_string(),
            run,
            _pipes: Vec::new(),
        }
    }
}

/// Read what is in a pipe now, without waiting for writers to close it.
fn drain(fd: &OwnedFd) -> String {
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut file = fs::File::from(fd.try_clone().expect("dup pipe"));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = file.read(&mut chunk) {
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A container that is force-deleted when dropped.
#[derive(Debug)]
pub struct Container<'rt> {
    pub rt: &'rt Runtime,
    pub id: String,
    /// The outcome of the command that started it.
    pub run: Outcome,
    _pipes: Vec<OwnedFd>,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.rt.command(&["delete", "--force", &self.id]).output();
    }
}
