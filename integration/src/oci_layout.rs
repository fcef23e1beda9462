//! OCI image layout tarballs built locally, for engines that take images
//! (`ctr images import`) on a machine without a registry.
//!
//! `OciImage::busybox` makes a one-layer image: busybox-static with its
//! applet symlinks, plus any extra files (e.g. a test workload). The
//! tarball holds `oci-layout`, `index.json` (naming the image with
//! containerd's `io.containerd.image.name` and the OCI `ref.name`
//! annotations) and `blobs/sha256/`: the uncompressed layer, the config and
//! the manifest. Needs `tar` and `sha256sum` (coreutils).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::TempDir;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// An image tarball on disk, removed on drop.
#[derive(Debug)]
pub struct OciImage {
    /// The full name, e.g. `docker.io/library/stasis-busybox:latest`.
    pub name: String,
    pub tarball: PathBuf,
    _dir: TempDir,
}

#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves `file` into the layout's blob store; returns (digest, size).
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let sum = run(Command::new("sha256sum").arg(file));
    let hex = sum
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    let size = fs::metadata(file).expect("stat blob").len();
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("create blobs dir");
    fs::rename(file, blobs.join(&hex)).expect("move blob");
    (format!("sha256:{hex}"), size)
}

fn add_json_blob(layout: &Path, scratch: &Path, value: &serde_json::Value) -> (String, u64) {
    fs::write(scratch, serde_json::to_vec(value).unwrap()).expect("write blob");
    add_blob(layout, scratch)
}

impl OciImage {
    /// busybox and its applets in `/bin`, `/etc/passwd` and `/etc/group`
    /// for root, the usual empty mount points, and `extra` files
    /// (`(path in the image, host file)`, copied with their modes).
    pub fn busybox(name: &str, extra: &[(&str, &Path)]) -> Self {
        let dir = TempDir::new("stasis-oci");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "dev", "etc", "proc", "root", "sys", "tmp", "run"] {
            fs::create_dir_all(rootfs.join(d)).expect("create rootfs dirs");
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (busybox-static)");
        for applet in run(Command::new("/bin/busybox").arg("--list")).lines() {
            if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
        for (to, from) in extra {
            let to = rootfs.join(to.trim_start_matches('/'));
            fs::create_dir_all(to.parent().unwrap()).expect("create extra file's dir");
            fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        Self::from_rootfs(name, &rootfs, dir)
    }

    /// Packs `rootfs` as the single layer of image `name`; `dir` is the
    /// scratch directory the tarball is written in (kept with the image).
    pub fn from_rootfs(name: &str, rootfs: &Path, dir: TempDir) -> Self {
        let layout = dir.path().join("layout");
        fs::create_dir_all(&layout).expect("create layout dir");
        let layer = dir.path().join("layer.tar");
        run(Command::new("tar")
            .args([
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--sort=name",
                "-C",
            ])
            .arg(rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."));
        let (layer_digest, layer_size) = add_blob(&layout, &layer);
        let scratch = dir.path().join("blob.json");
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
                "WorkingDir": "/"
            },
            // Uncompressed layer: its diff id is its digest.
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "stasis integration tests (oci_layout.rs)"}]
        });
        let (config_digest, config_size) = add_json_blob(&layout, &scratch, &config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}]
        });
        let (manifest_digest, manifest_size) = add_json_blob(&layout, &scratch, &manifest);
        let tag = name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'))
            .unwrap_or("latest");
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag
                }
            }]
        });
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .expect("index.json");
        fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        let tarball = dir.path().join("image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tarball)
            .args(["oci-layout", "index.json", "blobs"]));
        Self {
            name: name.to_string(),
            tarball,
            _dir: dir,
        }
    }
}
