//! State the engine cannot save: the dump fails with a message naming the
//! task, the fd and the kind, and the tree runs on exactly as before
//! (not traced, not stopped, its socket still serving).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stasis_integration::{stasis_bin, TempDir};

fn build(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("unsupported/tcp_listener.c");
    let bin = dir.join("tcp_listener");
    let st = Command::new("gcc").args(["-O2", "-static", "-o"]).arg(&bin).arg(&src).status().expect("run gcc");
    assert!(st.success(), "gcc failed");
    bin
}

fn state(dir: &Path) -> Option<(u64, u16)> {
    let s = std::fs::read_to_string(dir.join("state")).ok()?;
    let n = s.split_whitespace().find_map(|f| f.strip_prefix("n="))?.parse().ok()?;
    let port = s.split_whitespace().find_map(|f| f.strip_prefix("port="))?.parse().ok()?;
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

#[test]
fn a_tcp_socket_is_refused_and_the_tree_runs_on() {
    let tmp = TempDir::new("stasis-unsupported");
    let bin = build(tmp.path());
    let mut child = Command::new(&bin)
        .arg(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start listener");
    let pid = child.id();
    let (n0, port) = wait_beyond(tmp.path(), 0);
    let image = tmp.path().join("img");

    let out = Command::new(stasis_bin())
        .args(["tree", "dump", "--pid", &pid.to_string(), "--image-path"])
        .arg(&image)
        .output()
        .expect("run stasis");
    let _ = child.try_wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the dump must fail: {err}");
    assert!(
        err.contains(&format!("task {pid}")) && err.contains("fd 3") && err.contains("socket"),
        "message must name the task, fd and kind: {err}"
    );
    // Nothing of the failed image is left that could pass for a checkpoint.
    assert!(!image.join("inventory.img").exists() && !image.join("pages.img").exists());

    // Untouched: running, not traced, still counting and serving.
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
