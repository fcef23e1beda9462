//! A small OCI image builder for tests that cannot pull from a registry:
//! a single-layer image (busybox-static and its applets, plus any files a
//! test adds) written as an OCI image layout archive (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) that `ctr images import` (and
//! `podman load`, `skopeo copy oci-archive:`) accept.
//!
//! The output is deterministic: entries are sorted, owned by 0:0 with
//! mtime 0, and the layer is an uncompressed tar, so the same inputs give
//! the same digests (containerd then shares the unpacked snapshot).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::json;
use sha2::{Digest, Sha256};

/// One entry of the layer, keyed by its path inside the image.
#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A single-layer linux/amd64 image under construction.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    name: String,
    entries: BTreeMap<String, Entry>,
    cmd: Vec<String>,
    env: Vec<String>,
}

impl ImageBuilder {
    /// An empty image named `name` (a full reference such as
    /// `docker.io/stasis/busybox:test`; `ctr images import` keeps it).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            entries: BTreeMap::new(),
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        }
    }

    /// `/bin/busybox` from the host (busybox-static) with a symlink per
    /// applet, the usual top-level directories and a root user.
    pub fn busybox(name: &str) -> Self {
        let mut image = Self::new(name);
        for d in ["bin", "dev", "etc", "proc", "root", "sys", "tmp"] {
            image = image.dir(d);
        }
        let busybox = fs::read("/bin/busybox")
            .expect("read /bin/busybox: install busybox-static (make deps)");
        image = image.file("bin/busybox", busybox, 0o755);
        for applet in crate::busybox_applets() {
            image = image.symlink(&format!("bin/{applet}"), "busybox");
        }
        image
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
                0o644,
            )
            .file("etc/group", b"root:x:0:\n".to_vec(), 0o644)
    }

    /// A directory (parents are added as needed for every entry).
    pub fn dir(mut self, path: &str) -> Self {
        self.entries.insert(clean(path), Entry::Dir);
        self
    }

    /// A regular file with `data` and permission bits `mode`.
    pub fn file(mut self, path: &str, data: Vec<u8>, mode: u32) -> Self {
        self.entries.insert(clean(path), Entry::File { data, mode });
        self
    }

    /// A copy of the host file `src`, keeping its permission bits.
    pub fn copy(self, path: &str, src: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let data = fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
        let mode = fs::metadata(src).expect("stat").permissions().mode() & 0o7777;
        self.file(path, data, mode)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries
            .insert(clean(path), Entry::Symlink(target.to_string()));
        self
    }

    /// The image config's default command.
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer: a tar of every entry (and its parent directories).
    fn layer(&self) -> Vec<u8> {
        let mut entries = self.entries.clone();
        for path in self.entries.keys() {
            let mut p = Path::new(path).parent();
            while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
                entries
                    .entry(dir.to_string_lossy().into_owned())
                    .or_insert(Entry::Dir);
                p = dir.parent();
            }
        }
        let mut tar = Tar::default();
        for (path, entry) in &entries {
            match entry {
                Entry::Dir => tar.dir(&format!("{path}/"), 0o755),
                Entry::File { data, mode } => tar.file(path, data, *mode),
                Entry::Symlink(target) => tar.symlink(path, target),
            }
        }
        tar.finish()
    }

    /// The OCI image layout archive, in memory.
    pub fn archive(&self) -> Vec<u8> {
        let mut blobs = BTreeMap::new();
        let mut blob = |data: Vec<u8>| {
            let digest = format!("sha256:{}", hex(&Sha256::digest(&data)));
            let size = data.len();
            blobs.insert(digest.clone(), data);
            (digest, size)
        };
        let (layer, layer_size) = blob(self.layer());
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": self.env, "Cmd": self.cmd, "WorkingDir": "/" },
            "rootfs": { "type": "layers", "diff_ids": [layer] },
            "history": [{ "created_by": "stasis-integration oci_image" }],
        });
        let (config, config_size) = blob(serde_json::to_vec(&config).expect("config json"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer,
                "size": layer_size,
            }],
        });
        let (manifest, manifest_size) = blob(serde_json::to_vec(&manifest).expect("manifest json"));
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest,
                "size": manifest_size,
                "platform": { "architecture": "amd64", "os": "linux" },
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": self.name,
                },
            }],
        });
        let mut tar = Tar::default();
        tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
        tar.file(
            "index.json",
            &serde_json::to_vec(&index).expect("index json"),
            0o644,
        );
        tar.dir("blobs/", 0o755);
        tar.dir("blobs/sha256/", 0o755);
        for (digest, data) in &blobs {
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            tar.file(&format!("blobs/sha256/{hex}"), data, 0o644);
        }
        tar.finish()
    }

    /// Writes the archive to `out` (for `ctr images import out`).
    pub fn write(&self, out: &Path) -> io::Result<()> {
        fs::write(out, self.archive())
    }
}

/// The name of [`counter_image`].
pub const COUNTER_IMAGE: &str = "docker.io/stasis/busybox-counter:test";

/// The busybox image with the counter workload ([`crate::build_counter`])
/// in `/bin/counter`, its default command; built once per test process.
pub fn counter_image() -> &'static ImageBuilder {
    static IMAGE: OnceLock<ImageBuilder> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = crate::TempDir::new("stasis-counter-image");
        let counter = dir.path().join("counter");
        crate::build_counter(&counter);
        // copy() reads the file: the directory can go.
        ImageBuilder::busybox(COUNTER_IMAGE)
            .copy("bin/counter", &counter)
            .cmd(&["/bin/counter"])
    })
}

/// `path` without leading `/` or `./` and trailing `/`.
fn clean(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_matches('/');
    assert!(
        !p.is_empty() && !p.split('/').any(|c| c.is_empty() || c == "." || c == ".."),
        "bad image path {path:?}"
    );
    p.to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal ustar writer: directories, regular files and symlinks, owned
/// by 0:0 with mtime 0.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        let mut h = [0u8; 512];
        let (prefix, name) = split_name(name);
        let put = |h: &mut [u8; 512], at: usize, len: usize, value: &[u8]| {
            assert!(value.len() <= len, "tar field too long: {value:?}");
            h[at..at + value.len()].copy_from_slice(value);
        };
        let octal = |h: &mut [u8; 512], at: usize, len: usize, value: u64| {
            let s = format!("{value:0width$o}\0", width = len - 1);
            put(h, at, len, s.as_bytes());
        };
        put(&mut h, 0, 100, name.as_bytes());
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        put(&mut h, 157, 100, link.as_bytes());
        put(&mut h, 257, 6, b"ustar\0");
        put(&mut h, 263, 2, b"00");
        put(&mut h, 265, 32, b"root");
        put(&mut h, 297, 32, b"root");
        put(&mut h, 345, 155, prefix.as_bytes());
        // The checksum is computed with its own field as spaces.
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn dir(&mut self, name: &str, mode: u32) {
        self.header(name, mode, 0, b'5', "");
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.header(name, mode, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

/// ustar splits names longer than 100 bytes at a `/` into prefix and name.
fn split_name(path: &str) -> (&str, &str) {
    if path.len() <= 100 {
        return ("", path);
    }
    let at = path[..path.len().min(156)]
        .rfind('/')
        .filter(|&i| path.len() - i - 1 <= 100 && i > 0)
        .unwrap_or_else(|| panic!("path too long for ustar: {path}"));
    (&path[..at], &path[at + 1..])
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use super::*;

    #[test]
    fn sha256_matches_the_known_vector() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// GNU tar reads the layer back: names, kinds, modes, link targets and
    /// contents.
    #[test]
    fn the_layer_is_a_tar_that_gnu_tar_lists() {
        let image = ImageBuilder::new("x")
            .file("usr/share/deep/file.txt", b"hello\n".to_vec(), 0o640)
            .symlink("bin/sh", "busybox")
            .dir("tmp");
        let dir = crate::TempDir::new("stasis-oci-test");
        let layer = dir.path().join("layer.tar");
        fs::write(&layer, image.layer()).unwrap();
        let out = Command::new("tar")
            .arg("-tvf")
            .arg(&layer)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let list = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 7, "{list}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("lrwxrwxrwx root/root") && l.ends_with("bin/sh -> busybox")),
            "{list}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("-rw-r----- root/root")
                    && l.ends_with("usr/share/deep/file.txt")),
            "{list}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("drwxr-xr-x") && l.ends_with("usr/share/")),
            "{list}"
        );
        let x = dir.path().join("x");
        fs::create_dir(&x).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&layer)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            fs::read(x.join("usr/share/deep/file.txt")).unwrap(),
            b"hello\n"
        );
    }

    /// The archive is deterministic, and every blob is named by its digest.
    #[test]
    fn the_archive_is_deterministic_and_content_addressed() {
        let a = ImageBuilder::busybox("docker.io/stasis/t:1").archive();
        let b = ImageBuilder::busybox("docker.io/stasis/t:1").archive();
        assert!(a == b, "two builds differ");
        let dir = crate::TempDir::new("stasis-oci-test");
        fs::write(dir.path().join("img.tar"), &a).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(dir.path().join("img.tar"))
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        let blobs = dir.path().join("blobs/sha256");
        let mut n = 0;
        for e in fs::read_dir(&blobs).unwrap().flatten() {
            let data = fs::read(e.path()).unwrap();
            assert_eq!(hex(&Sha256::digest(&data)), e.file_name().to_string_lossy());
            n += 1;
        }
        assert_eq!(n, 3, "layer, config, manifest");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "docker.io/stasis/t:1"
        );
    }
}
