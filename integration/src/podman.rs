//! A private podman for the tests: its own storage (vfs driver), run root,
//! libpod tmp dir, events file and `containers.conf`, under one temporary
//! directory, so a test neither sees nor touches the machine's podman
//! containers and images. Images are made offline (`podman import` of a tar
//! of a rootfs directory): no registry is needed.
//!
//! Podman passes the runtime no `--root`: containers run with stasis
//! delegating to runc's default root, under podman's 64-hex container ids.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::{require_prerequisites, Outcome, TempDir};

/// podman (with conmon) and criu must be installed: podman refuses to
/// checkpoint or restore without a `criu` binary of at least 3.11, even
/// though stasis never runs it. Checked once, fatal when missing.
pub fn require_podman() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        require_prerequisites();
        for (bin, pkg) in [("podman", "podman"), ("conmon", "conmon"), ("criu", "criu")] {
            let ok = Command::new(bin)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(ok, "`{bin} --version` failed: install {pkg} (make deps)");
        }
    });
}

/// A podman with private state, removed (containers, images, storage) on drop.
#[derive(Debug)]
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    pub fn new() -> Self {
        require_podman();
        let dir = TempDir::new("stasis-podman");
        // Podman as root asks for RLIMIT_NOFILE and RLIMIT_NPROC of
        // 1048576 and 32768, which the runtime cannot set when the caller
        // lacks CAP_SYS_RESOURCE and has lower hard limits (some CI
        // sandboxes): the containers get the caller's hard limits instead.
        let hard = |r| nix::sys::resource::getrlimit(r).map(|(_, h)| h).unwrap_or(1024);
        let nofile = hard(nix::sys::resource::Resource::RLIMIT_NOFILE).min(1 << 20);
        let nproc = hard(nix::sys::resource::Resource::RLIMIT_NPROC).min(1 << 15);
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
             log_driver = \"k8s-file\"\n\
             [engine]\n\
             # --log-format=json --log FILE go only to runtimes named here.\n\
             runtime_supports_json = [\"crun\", \"runc\", \"stasis\"]\n"
        );
        fs::write(dir.path().join("containers.conf"), conf).expect("write containers.conf");
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman <private state flags> args…`, stdin from /dev/null.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let d = self.dir();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Run to completion and capture stdout/stderr.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        let out = self.command(args).output().expect("run podman");
        Outcome::from_output(out)
    }

    /// `podman import` of a tar of `rootfs` as image `tag`.
    #[track_caller]
    pub fn import_rootfs(&self, rootfs: &Path, tag: &str) {
        let tar = self.dir().join("rootfs.tar");
        let out = Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .expect("run tar");
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        self.exec(&[OsStr::new("import"), tar.as_os_str(), OsStr::new(tag)]).ok();
        let _ = fs::remove_file(&tar);
    }

    /// `podman inspect NAME`, the container's object.
    #[track_caller]
    pub fn inspect(&self, name: &str) -> Value {
        let out = self.exec(&["container", "inspect", name]).ok();
        let v: Value = serde_json::from_str(&out.stdout).expect("parse podman inspect");
        v[0].clone()
    }

    /// Mounts still present under this podman's directory.
    fn mounts(&self) -> Vec<PathBuf> {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut out: Vec<PathBuf> = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(self.dir()))
            .collect();
        // Deepest first.
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        out
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.exec(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.exec(&["rmi", "--all", "--force"]);
        for m in self.mounts() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        // TempDir's own drop removes the directory.
    }
}
