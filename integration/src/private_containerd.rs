//! A containerd of the test's own: root, state, sockets and temporary dirs
//! under a TempDir, the CRI plugin disabled, extra environment (e.g. PATH
//! with a shim's directory). `ctr` runs against it in a test namespace.
//! Dropping it deletes whatever tasks and containers are left, stops the
//! daemon, ends the shims it started (found by its address in their
//! command line), and unmounts anything left under its directories.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Outcome, TempDir};

/// The longest a single ctr command may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug)]
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
    pub address: PathBuf,
    pub namespace: String,
}

impl Containerd {
    /// Starts containerd with `env` added to its environment and waits
    /// until it answers.
    pub fn start(namespace: &str, env: &[(&str, OsString)]) -> Self {
        crate::require_prerequisites();
        let dir = TempDir::new("stasis-ctrd");
        let d = dir.path();
        let address = d.join("containerd.sock");
        for sub in ["root", "state", "opt", "xdg"] {
            fs::create_dir_all(d.join(sub)).expect("create containerd dirs");
        }
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = address.display(),
            opt = d.join("opt").display(),
        );
        fs::write(d.join("config.toml"), config).expect("write config.toml");
        let log = fs::File::create(d.join("containerd.log")).expect("create containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            // Checkpoint images are staged in $XDG_RUNTIME_DIR (else /tmp).
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        let mut ctrd = Self {
            dir,
            child: Some(child),
            address,
            namespace: namespace.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ctrd.ctr(&["version"]).code == 0 {
                break;
            }
            if let Some(status) = ctrd.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited ({status}): {}", ctrd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                ctrd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ctrd
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A task's bundle directory (its rootfs is mounted there while it exists).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    pub fn ctr_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs ctr and waits for it, at most `CTR_TIMEOUT` (then kills it and
    /// reports code -1), so that a hung daemon or shim fails the test
    /// instead of blocking it.
    pub fn ctr<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        let mut child = self
            .ctr_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        let drain = |p: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut p) = p {
                    let _ = p.read_to_string(&mut s);
                }
                s
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + CTR_TIMEOUT;
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait for ctr") {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = err.join().unwrap_or_default();
        if code == -1 {
            stderr.push_str(&format!("\n(ctr killed after {CTR_TIMEOUT:?})"));
        }
        Outcome {
            code,
            stdout: out.join().unwrap_or_default(),
            stderr,
        }
    }

    /// Pids of live `containerd-shim-*` processes whose command line
    /// mentions this daemon's address: the shims it started.
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.address.display().to_string();
        let mut out = Vec::new();
        for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args[0]
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("containerd-shim"));
            if is_shim && args.iter().any(|a| a == &needle) {
                out.push(pid);
            }
        }
        out
    }

    /// Mount points under this daemon's directories.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.path().display().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }

    /// Lines of `ctr <what> ls -q`.
    pub fn list(&self, what: &str) -> Vec<String> {
        self.ctr(&[what, "ls", "-q"])
            .stdout
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Best effort: the test may have failed half way.
        for task in self.list("tasks") {
            let _ = self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", &task]);
            let _ = self.ctr(&["tasks", "delete", "--force", &task]);
        }
        for c in self.list("containers") {
            let _ = self.ctr(&["containers", "delete", &c]);
        }
        let shims = self.shim_pids();
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the daemon this guard started; no memory effects.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in shims {
            // SAFETY: as above, on a shim this daemon started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
