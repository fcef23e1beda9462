//! A private containerd daemon for tests: its own root, state, sockets,
//! temp dirs and ctr namespace, all under one temporary directory, so it
//! never sees (or disturbs) another containerd on the machine; the CRI
//! plugin is disabled. Extra environment (e.g. a PATH on which containerd
//! finds a shim, `containerd-shim-<runtime>`) goes to the daemon and so to
//! its shims. Dropping it removes its tasks, containers and images, stops
//! the daemon and its shims, unmounts what is left under its directory and
//! removes the namespace's cgroups.
//!
//! By default the test process becomes a child subreaper, so the shims
//! (which daemonize) are reparented to it and reaped here instead of
//! becoming zombies of pid 1 ([`Builder::leave_orphans`] opts out).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::oci_image::ImageBuilder;
use crate::{unique_id, Outcome, TempDir};

/// How long the daemon may take to open its socket, or to exit.
const DAEMON_WAIT: Duration = Duration::from_secs(30);
/// How long one ctr command may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);

/// A running private containerd.
#[derive(Debug)]
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
    namespace: String,
    /// This process is the shims' subreaper and reaps them at the end.
    adopts_orphans: bool,
}

/// What [`Containerd::stop`] had to clean up itself: after a test that
/// deleted its tasks and containers through ctr, all of it is empty.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Shim (or other) processes still running with our socket address.
    pub processes: Vec<String>,
    /// Mount points left under the daemon's directory.
    pub mounts: Vec<String>,
}

/// How to start a [`Containerd`]: [`Containerd::builder`].
#[derive(Debug)]
pub struct Builder {
    env: Vec<(String, OsString)>,
    path: Vec<PathBuf>,
    adopt_orphans: bool,
}

impl Builder {
    /// Adds `key=value` to the daemon's environment (its shims inherit it).
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Puts `dir` before the inherited PATH of the daemon, which looks for
    /// the shim of runtime `io.containerd.<name>.v2` as
    /// `containerd-shim-<name>-v2` on it.
    pub fn path_prepend(mut self, dir: &Path) -> Self {
        self.path.push(dir.to_path_buf());
        self
    }

    /// Does not make the test process a child subreaper: the daemonized
    /// shims, and the processes of a shim that dies, go to pid 1 as they
    /// would on a host. For tests that kill a shim and then watch its
    /// container's init disappear (as our orphan it would stay a zombie).
    pub fn leave_orphans(mut self) -> Self {
        self.adopt_orphans = false;
        self
    }

    /// Starts `containerd` (Debian's package: `make deps`) with a generated
    /// config and waits until it answers.
    pub fn start(self) -> Containerd {
        crate::require_prerequisites();
        assert!(
            Command::new("containerd")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "`containerd --version` failed: install containerd (make deps)"
        );
        if self.adopt_orphans {
            adopt_orphans();
        }
        let dir = TempDir::new("stasis-ctd");
        let d = dir.path();
        for sub in ["root", "state", "tmp", "xdg", "runc", "fifo", "opt"] {
            fs::create_dir_all(d.join(sub)).expect("create containerd dirs");
        }
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/ctd.sock"

[ttrpc]
  address = "{d}/ctd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = d.display()
        );
        fs::write(d.join("config.toml"), config).expect("write config.toml");
        let log = fs::File::create(d.join("containerd.log")).expect("containerd.log");
        let mut cmd = Command::new("containerd");
        // The daemon unpacks restore images in $XDG_RUNTIME_DIR (and never
        // removes them; the stasis shim does) and checkpoints in it, apart
        // from the temporary files of the daemon and its shims: keep all
        // in our directory.
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .env("TMPDIR", d.join("tmp"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if !self.path.is_empty() {
            let inherited = std::env::var_os("PATH").unwrap_or_default();
            let path = std::env::join_paths(
                self.path
                    .iter()
                    .cloned()
                    .chain(std::env::split_paths(&inherited)),
            )
            .expect("PATH for containerd");
            cmd.env("PATH", path);
        }
        let child = cmd.spawn().expect("spawn containerd");
        let mut ctd = Containerd {
            dir,
            child: Some(child),
            adopts_orphans: self.adopt_orphans,
            namespace: unique_id("stasis"),
        };
        let start = Instant::now();
        while !ctd.ctr(&["version"]).stdout.contains("Server:") {
            if let Some(status) = ctd.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                ctd.child = None;
                panic!("containerd exited ({status}): {}", ctd.log());
            }
            assert!(
                start.elapsed() < DAEMON_WAIT,
                "containerd did not answer within {DAEMON_WAIT:?}: {}",
                ctd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ctd
    }
}

impl Containerd {
    /// A private containerd with the defaults: [`Containerd::builder`]`.start()`.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options for the daemon: extra environment, PATH, orphans.
    pub fn builder() -> Builder {
        Builder {
            env: Vec::new(),
            path: Vec::new(),
            adopt_orphans: true,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gRPC socket (`ctr --address`).
    pub fn address(&self) -> PathBuf {
        self.dir().join("ctd.sock")
    }

    /// The ctr namespace every command of this daemon uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// The daemon's `$XDG_RUNTIME_DIR`, where it unpacks the checkpoint a
    /// task is restored from.
    pub fn xdg_runtime_dir(&self) -> PathBuf {
        self.dir().join("xdg")
    }

    /// Task `id`'s bundle directory, as containerd made it for the shim
    /// (its rootfs is mounted there while the task exists).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// A private runtime state root, for `ctr run --runc-root`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir().join("runc")
    }

    /// A private FIFO directory, for `ctr run --fifo-dir`.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir().join("fifo")
    }

    /// `ctr --address A --namespace N args…`, stdin from /dev/null.
    pub fn ctr_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs ctr to completion, or kills it after [`CTR_TIMEOUT`] (code -1):
    /// some ctr commands wait forever on a task that never ran.
    pub fn ctr<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    pub fn ctr_timeout<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], timeout: Duration) -> Outcome {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let (out, err) = (
            self.dir().join(format!("ctr-{n}.out")),
            self.dir().join(format!("ctr-{n}.err")),
        );
        let mut child = self
            .ctr_command(args)
            .stdout(fs::File::create(&out).expect("ctr stdout file"))
            .stderr(fs::File::create(&err).expect("ctr stderr file"))
            .spawn()
            .expect("run ctr");
        let start = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait for ctr") {
                break status.code().unwrap_or(-1);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let read = |p: &Path| {
            let text = fs::read_to_string(p).unwrap_or_default();
            let _ = fs::remove_file(p);
            text
        };
        let mut outcome = Outcome {
            code,
            stdout: read(&out),
            stderr: read(&err),
        };
        if code == -1 && start.elapsed() > timeout {
            outcome
                .stderr
                .push_str(&format!("(ctr killed after {timeout:?})"));
        }
        outcome
    }

    /// Writes `image` as an OCI archive and `ctr images import`s it.
    #[track_caller]
    pub fn import(&self, image: &ImageBuilder) {
        let archive = self.dir().join("image.tar");
        image.write(&archive).expect("write image archive");
        let out = self.ctr(&["images".as_ref(), "import".as_ref(), archive.as_os_str()]);
        assert_eq!(out.code, 0, "ctr images import: {out:?}");
        let list = self.ctr(&["images", "ls", "-q"]).ok();
        assert!(
            list.stdout.lines().any(|l| l == image.name()),
            "{} not imported: {list:?}",
            image.name()
        );
    }

    /// Lines of `ctr <what> ls -q` (`tasks`, `containers`, `images`…).
    #[track_caller]
    pub fn list(&self, what: &str) -> Vec<String> {
        self.ctr(&[what, "ls", "-q"])
            .ok()
            .stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `ctr events` from now on, until [`Events::stop`].
    pub fn events(&self) -> Events {
        let mut child = self
            .ctr_command(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        let out = child.stdout.take().expect("ctr events stdout");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let lines = seen.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                let mut all = lines.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Events {
            child,
            reader: Some(reader),
            seen,
        }
    }

    /// Pids of live `containerd-shim-*` processes with this daemon's
    /// address among their arguments: the shims it started.
    pub fn shim_pids(&self) -> Vec<i32> {
        let address = self.address().to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|(_, args)| {
                let is_shim = args[0]
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("containerd-shim"));
                is_shim && args.iter().any(|a| a == &address)
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Mount points under this daemon's directory.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.dir())
    }

    /// `(pid, status)` of task `id` from `ctr tasks ls`, if it exists.
    #[track_caller]
    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        let out = self.ctr(&["tasks", "ls"]).ok();
        parse_task(&out.stdout, id)
    }

    /// Polls task `id` until its status is `want`; returns its pid.
    #[track_caller]
    pub fn wait_task(&self, id: &str, want: &str) -> i32 {
        let start = Instant::now();
        loop {
            let task = self.task(id);
            if let Some((pid, status)) = &task {
                if status == want {
                    return *pid;
                }
            }
            assert!(
                start.elapsed() < DAEMON_WAIT,
                "task {id}: {task:?}, not {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes every task, container and image of the namespace, stops the
    /// daemon, then removes whatever is still there and reports it.
    pub fn stop(mut self) -> Leftovers {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Leftovers {
        let mut left = Leftovers::default();
        let Some(mut child) = self.child.take() else {
            return left;
        };
        let ids = |what: &str| -> Vec<String> {
            let out = self.ctr(&[what, "ls", "-q"]);
            out.stdout.lines().map(str::to_string).collect()
        };
        // Not `tasks delete --force`: on a task that never ran (a failed
        // restore) it waits forever for an exit.
        let short = Duration::from_secs(10);
        for id in ids("tasks") {
            let _ = self.ctr_timeout(&["tasks", "kill", "--signal", "SIGKILL", &id], short);
            let start = Instant::now();
            let busy = || {
                parse_task(&self.ctr_timeout(&["tasks", "ls"], short).stdout, &id)
                    .is_some_and(|(_, s)| s == "RUNNING" || s == "PAUSED")
            };
            while busy() && start.elapsed() < short {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.ctr_timeout(&["tasks", "delete", &id], short);
        }
        for id in ids("containers") {
            let _ = self.ctr(&["containers", "delete", &id]);
        }
        for id in ids("images") {
            let _ = self.ctr(&["images", "delete", &id]);
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > DAEMON_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Shims carry the daemon's address on their command line. A shim
        // exits on its own shortly after its last task is deleted (the
        // daemon does not wait for it): give it that time.
        let address = self.address().to_string_lossy().into_owned();
        let start = Instant::now();
        while !processes_mentioning(&address).is_empty() && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (pid, cmdline) in processes_mentioning(&address) {
            left.processes.push(cmdline);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Only as the shims' subreaper: otherwise they are not ours, and
        // reaping any child could take the `ctr` of a test running beside.
        if self.adopts_orphans {
            reap_children();
        }
        left.mounts = unmount_under(self.dir());
        remove_cgroups(&self.namespace);
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A running `ctr events`, killed on drop.
#[derive(Debug)]
pub struct Events {
    child: Child,
    reader: Option<JoinHandle<()>>,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Events {
    /// The event lines printed so far.
    pub fn seen(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for an event line for which `want` holds;
    /// returns it.
    pub fn wait_line(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.lock().unwrap().lines().find(|l| want(l)) {
                return Some(l.to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the subscription; returns every event line it printed.
    pub fn stop(mut self) -> String {
        self.end();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.seen()
    }

    fn end(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.end();
    }
}

/// Makes this process a child subreaper: daemonizing descendants (the
/// shims) are reparented to it, to be reaped by [`reap_children`], rather
/// than to pid 1.
pub fn adopt_orphans() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and
    // changes only this process' attribute.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
}

/// The `(pid, status)` of task `id` in `ctr tasks ls` output.
fn parse_task(list: &str, id: &str) -> Option<(i32, String)> {
    list.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() == 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(-1), f[2].to_string()))
    })
}

/// `(pid, arguments)` of every process with a command line (zombies and
/// kernel threads have none).
fn processes() -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue;
        }
        let args = raw
            .strip_suffix(b"\0")
            .unwrap_or(&raw)
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((pid, args));
    }
    out
}

/// `(pid, cmdline)` of every process whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    processes()
        .into_iter()
        .map(|(pid, args)| (pid, args.join(" ")))
        .filter(|(_, cmdline)| cmdline.contains(needle))
        .collect()
}

/// Reaps exited children (the shims reparented to us), waiting a little
/// for ones just killed.
pub fn reap_children() {
    let start = Instant::now();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Lazily unmounts every mount point under `dir`, deepest first; returns
/// them.
fn unmount_under(dir: &Path) -> Vec<String> {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    points
}

/// Removes the (empty) cgroups runc created for the namespace, under every
/// hierarchy (cgroup v1 controllers and v2).
fn remove_cgroups(namespace: &str) {
    fn rmdir_tree(dir: &Path) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let root = Path::new("/sys/fs/cgroup");
    rmdir_tree_if(&root.join(namespace), rmdir_tree);
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        rmdir_tree_if(&entry.path().join(namespace), rmdir_tree);
    }
}

fn rmdir_tree_if(dir: &Path, rm: fn(&Path)) {
    if dir.is_dir() {
        rm(dir);
    }
}

/// The runc options protobuf (`containerd.runc.v1.Options`) base64-decoded
/// from `ctr containers info`: its `binary_name` (field 6).
pub fn runtime_binary_name(info: &serde_json::Value) -> Option<String> {
    let value = info["Runtime"]["Options"]["value"].as_str()?;
    let bytes = base64_decode(value)?;
    let mut i = 0;
    while i < bytes.len() {
        let key = bytes[i];
        i += 1;
        if key & 7 != 2 {
            return None; // only length-delimited fields are expected here
        }
        let (len, n) = varint(&bytes[i..])?;
        i += n;
        let field = bytes.get(i..i + len)?;
        i += len;
        if key >> 3 == 6 {
            return Some(String::from_utf8_lossy(field).into_owned());
        }
    }
    None
}

fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, &byte) in b.iter().enumerate().take(9) {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_name_is_read_from_runc_options() {
        // As seen on containerd 1.6.20 for `--runc-binary /tmp/ctrprobe/logrt`.
        let info = serde_json::json!({"Runtime": {"Options": {
            "type_url": "containerd.runc.v1.Options",
            "value": "MhMvdG1wL2N0cnByb2JlL2xvZ3J0"}}});
        assert_eq!(
            runtime_binary_name(&info).as_deref(),
            Some("/tmp/ctrprobe/logrt")
        );
        assert_eq!(runtime_binary_name(&serde_json::json!({})), None);
    }
}
