//! The containerd shim tests' kit: a private containerd with the shim on
//! its PATH, the counter running in a task, and the "nothing left" check.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cr::{private_dirs, progress_in};
use stasis_integration::containerd::Containerd;
use stasis_integration::oci_image::{counter_image, COUNTER_IMAGE};
use stasis_integration::{stasis_bin, workspace_root, TempDir};

pub const RUNTIME: &str = "io.containerd.stasis.v2";
pub const WAIT: Duration = Duration::from_secs(20);

/// The shim, built beside stasis (same target dir) and not older than its sources.
pub fn shim_bin() -> PathBuf {
    let bin = stasis_bin().with_file_name("containerd-shim-stasis-v2");
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    assert!(
        mtime(&bin).is_some(),
        "{} missing: run `make build`",
        bin.display()
    );
    let newest_src = fs::read_dir(workspace_root().join("shim/src"))
        .unwrap()
        .flatten()
        .filter_map(|e| mtime(&e.path()))
        .max();
    assert!(
        mtime(&bin) >= newest_src,
        "{} is older than shim/src: run `make build`",
        bin.display()
    );
    bin
}

#[track_caller]
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The task's status as `ctr task ls` shows it.
#[track_caller]
pub fn status(ctrd: &Containerd, id: &str) -> Option<String> {
    ctrd.task(id).map(|(_, status)| status)
}

/// Polls task `id` until its status is `want`; returns its pid.
#[track_caller]
pub fn wait_status(ctrd: &Containerd, id: &str, want: &str) -> i32 {
    wait_for(&format!("{id} {want}"), || {
        ctrd.task(id).filter(|(_, s)| s == want).map(|(p, _)| p)
    })
}

/// A private containerd with the shim on its PATH and the counter image
/// imported; the scratch dir holds the shim's state root. The test process
/// stays no subreaper: a_dead_shim_is_cleaned_up_by_its_delete_action
/// watches the init of a killed shim disappear, which would be our zombie.
pub struct Setup {
    pub ctrd: Containerd,
    pub shim_root: PathBuf,
    pub scratch: TempDir,
}

pub fn setup() -> Setup {
    let scratch = TempDir::new("stasis-shim");
    let shim = shim_bin();
    let shim_root = scratch.path().join("shim-root");
    let ctrd = Containerd::builder()
        .path_prepend(shim.parent().unwrap())
        .env("STASIS_BINARY", stasis_bin())
        .env("STASIS_SHIM_ROOT", &shim_root)
        .leave_orphans()
        .start();
    ctrd.import(counter_image());
    Setup {
        ctrd,
        shim_root,
        scratch,
    }
}

/// `ctr run -d --null-io --runtime io.containerd.stasis.v2` of the counter
/// image running `cmd`, checked; returns the task's pid once it runs.
#[track_caller]
pub fn run_null_io(ctrd: &Containerd, id: &str, cmd: &[&str]) -> i32 {
    let mut args = vec![
        "run",
        "-d",
        "--null-io",
        "--runtime",
        RUNTIME,
        COUNTER_IMAGE,
        id,
    ];
    args.extend(cmd);
    let run = ctrd.ctr(&args);
    assert_eq!(run.code, 0, "ctr run: {run:?}\n{}", ctrd.log());
    wait_status(ctrd, id, "RUNNING")
}

/// [`run_null_io`] of `cmd`, which runs the counter on `/tmp/state`;
/// returns the task's pid and rootfs once the counter is at iteration 3.
#[track_caller]
pub fn run_counter(ctrd: &Containerd, id: &str, cmd: &[&str]) -> (i32, PathBuf) {
    let pid = run_null_io(ctrd, id, cmd);
    let rootfs = ctrd.bundle(id).join("rootfs");
    wait_for("the counter", || {
        progress_in(&rootfs).filter(|p| p.iter >= 3)
    });
    (pid, rootfs)
}

/// The shim's socket, as its task's bundle records it.
pub fn shim_socket(ctrd: &Containerd, id: &str) -> PathBuf {
    let address =
        fs::read_to_string(ctrd.bundle(id).join("address")).expect("the shim's address file");
    PathBuf::from(address.trim().trim_start_matches("unix://"))
}

/// Nothing of the shim's tasks is left: no shim process, task, container,
/// mount, runtime state, stasis directory or bundle.
#[track_caller]
pub fn assert_all_gone(s: &Setup, ids: &[&str]) {
    let ctrd = &s.ctrd;
    wait_for("the shims to exit", || {
        ctrd.shim_pids().is_empty().then_some(())
    });
    assert_eq!(ctrd.list("tasks"), Vec::<String>::new());
    assert_eq!(ctrd.list("containers"), Vec::<String>::new());
    assert_eq!(ctrd.mounts(), Vec::<String>::new(), "mounts left");
    let entries = |d: &Path| fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    let root = s.shim_root.join(ctrd.namespace());
    assert_eq!(
        entries(&root),
        0,
        "runtime state left in {}",
        root.display()
    );
    for id in ids {
        assert!(private_dirs(id).is_empty(), "stasis dirs of {id} left");
        assert!(!ctrd.bundle(id).exists(), "bundle of {id} left");
    }
}
