//! State the engine cannot save: the dump fails with a message naming the
//! task, the fd and the kind, and the tree runs on exactly as before
//! (not traced, not stopped, its connection and listener still working,
//! its lease or lock still held).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stasis_integration::{stasis_bin, TempDir};

fn build(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("unsupported/{name}.c"));
    let bin = dir.join(name);
    let st = Command::new("gcc").args(["-O2", "-static", "-o"]).arg(&bin).arg(&src).status().expect("run gcc");
    assert!(st.success(), "gcc failed");
    bin
}

fn state(dir: &Path) -> Option<(u64, u16)> {
    let s = std::fs::read_to_string(dir.join("state")).ok()?;
    let n = s.split_whitespace().find_map(|f| f.strip_prefix("n="))?.parse().ok()?;
    let port = s.split_whitespace().find_map(|f| f.strip_prefix("port=")).map_or(Some(0), |p| p.parse().ok())?;
    Some((n, port))
}

fn wait_beyond(dir: &Path, n: u64) -> (u64, u16) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = state(dir).filter(|s| s.0 > n) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the listener made no progress beyond {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    s.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
}

/// Starts `bin` with `args`, its stdio on /dev/null.
fn start(bin: &Path, args: &[&std::ffi::OsStr]) -> std::process::Child {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

/// `stasis tree dump` of `pid` into `image`, which must fail (exit 1) and
/// leave nothing that could pass for a checkpoint; returns its stderr.
fn refused_dump(pid: u32, image: &Path) -> String {
    let out = Command::new(stasis_bin())
        .args(["tree", "dump", "--pid", &pid.to_string(), "--image-path"])
        .arg(image)
        .output()
        .expect("run stasis");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "the dump must fail: {err}");
    assert!(!image.join("inventory.img").exists() && !image.join("pages.img").exists());
    err
}

#[test]
fn a_tcp_connection_is_refused_and_the_tree_runs_on() {
    let tmp = TempDir::new("stasis-unsupported");
    let bin = build(tmp.path(), "tcp_connection");
    // The peer, outside the tree: echoes every byte until the end.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = echo.accept().expect("accept");
        let mut b = [0u8; 1];
        while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
    });
    let port_arg = echo_port.to_string();
    let mut child = start(&bin, &[tmp.path().as_os_str(), port_arg.as_ref()]);
    let pid = child.id();
    let (n0, port) = wait_beyond(tmp.path(), 0);
    let err = refused_dump(pid, &tmp.path().join("img"));
    // fd 3, the listener, would be saved; fd 4 is a connection to a
    // peer outside the tree. (The dump held it in repair mode until it
    // found that out: the echoes below show it left repair mode again.)
    assert!(
        err.contains(&format!("task {pid}: fd 4 (TCP connection 127.0.0.1:"))
            && err.contains(&format!(" -> 127.0.0.1:{echo_port}: the peer is not in the checkpoint; only connections inside it are saved)"))
            && err.contains("cannot be checkpointed"),
        "message must name the task, fd, kind and addresses: {err}"
    );

    // Untouched: running, not traced, still counting, talking over its
    // connection (it exits if that breaks) and serving.
    assert_eq!(status_field(pid, "TracerPid:"), "0");
    assert!(!status_field(pid, "State:").starts_with('T'));
    let (n1, _) = wait_beyond(tmp.path(), n0 + 5);
    assert!(n1 > n0);
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).expect("the listener answers");
    assert_eq!(&b, b"y");

    child.kill().ok();
    child.wait().ok();
}

/// Whether /proc/locks lists a `kind` lock (LEASE, FLOCK) held by `pid`.
fn lock_listed(pid: u32, kind: &str) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
    locks.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.get(1) == Some(&kind) && w.get(4) == Some(&pid.to_string().as_str())
    })
}

/// Locks are saved (zdtm file_locks) except leases and locks on anything
/// but regular files and directories: those are refused, and stay held.
#[test]
fn leases_and_locked_fifos_are_refused_and_stay_held() {
    let tmp = TempDir::new("stasis-unsupported-lock");
    let bin = build(tmp.path(), "file_lock");
    for (kind, shown, listed) in [
        ("lease", "/locked, with a LEASE file lock)", "LEASE"),
        ("fifo", "/fifo, a file lock on other than a regular file or directory)", "FLOCK"),
    ] {
        let dir = tmp.path().join(kind);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = start(&bin, &[dir.as_os_str(), kind.as_ref()]);
        let pid = child.id();
        let (n0, _) = wait_beyond(&dir, 0);
        assert!(lock_listed(pid, listed), "{kind}: no {listed} lock of {pid} in /proc/locks");
        let err = refused_dump(pid, &dir.join("img"));
        assert!(
            err.contains(&format!("task {pid}: fd 3 (")) && err.contains(shown),
            "{kind}: message must name the task, fd and lock: {err}"
        );
        assert_eq!(status_field(pid, "TracerPid:"), "0");
        assert!(!status_field(pid, "State:").starts_with('T'));
        let (n1, _) = wait_beyond(&dir, n0 + 5);
        assert!(n1 > n0);
        assert!(lock_listed(pid, listed), "{kind}: the lock is no longer held");
        child.kill().ok();
        child.wait().ok();
    }
}
