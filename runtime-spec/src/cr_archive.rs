//! The checkpoint archive of kubelet and CRI-O (also podman's `--export`):
//! one uncompressed tar holding
//!
//! | entry | what |
//! |---|---|
//! | `checkpoint/` | the image directory, flat (`inventory.img` is the last entry: an archive cut short lacks it) |
//! | `config.dump` | CRI-O's container metadata: `id`, `name`, `rootfsImage`, `rootfsImageRef`, `rootfsImageName`, `runtime`, `createdTime`, `checkpointedTime`, `restored` |
//! | `spec.dump` | the container's OCI config (its `config.json`), annotations included |
//! | `rootfs-diff.tar`, `deleted.files` | what the container changed in its rootfs (`rootfs_diff`) |
//! | `dump.log`, `stats-dump` | the checkpoint's work files |
//!
//! `stasis checkpoint --export FILE` writes it; `stasis restore --import
//! FILE` reads it back. Both work in a private directory next to the
//! archive (`.NAME.stasis-XXXXXX`, 0700) that they remove when done.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::archive;
use crate::rootfs_diff::{self, DELETED_FILES, DIFF_TAR};

pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
/// Top-level files a restore unpacks; any other top-level entry is skipped.
const KNOWN: [&str; 9] = [
    CONFIG_DUMP,
    SPEC_DUMP,
    DIFF_TAR,
    DELETED_FILES,
    "dump.log",
    "stats-dump",
    "bind.mounts",
    "network.status",
    "status.dump",
];

/// A new private directory next to `file`, 0700.
fn private_dir_for(file: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = file.file_name().context("the archive path has no file name")?;
    let template = parent.join(format!(".{}.stasis-{what}-XXXXXX", name.to_string_lossy()));
    let dir = nix::unistd::mkdtemp(&template).with_context(|| format!("create a directory next to {}", file.display()))?;
    Ok(dir)
}

/// `YYYY-MM-DDTHH:MM:SS…`: enough of RFC 3339 for Go's time parser to be
/// worth trying (what runc's state and CRI-O's annotation hold).
fn looks_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].iter().all(|&i| b[i].is_ascii_digit())
}

/// A checkpoint on its way into an archive.
pub struct Export {
    file: PathBuf,
    /// Private: the default image and work dirs, the rootfs diff.
    pub staging: PathBuf,
    diff: rootfs_diff::Plan,
    spec: Vec<u8>,
    annotations: serde_json::Map<String, Value>,
}

impl Export {
    /// Everything checked before the container is touched: `file` is new,
    /// the bundle's config is readable and the rootfs diff has a source.
    pub fn prepare(file: &Path, bundle: &Path, rootfs_base: Option<&Path>) -> anyhow::Result<Self> {
        if file.symlink_metadata().is_ok() {
            bail!("--export {}: the file already exists", file.display());
        }
        let config_file = bundle.join("config.json");
        let text = fs::read(&config_file).with_context(|| format!("read {}", config_file.display()))?;
        let config: Value = serde_json::from_slice(&text).with_context(|| format!("parse {}", config_file.display()))?;
        // A container stasis restored runs from a rewritten copy: spec.dump
        // is the caller's config it was restored with (rootfs and mounts are
        // the same in both).
        let spec = match crate::restore_bundle::original_config(bundle) {
            Some(orig) => fs::read(&orig).with_context(|| format!("read {}", orig.display()))?,
            None => text,
        };
        let annotations: Value = serde_json::from_slice(&spec).with_context(|| "parse the container's config")?;
        let root = config["root"]["path"].as_str().with_context(|| format!("{}: no root.path", config_file.display()))?;
        let mounts: Vec<String> = config["mounts"]
            .as_array()
            .map(|ms| ms.iter().filter_map(|m| m["destination"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let diff = rootfs_diff::plan(&bundle.join(root), rootfs_base, &mounts)?;
        let staging = private_dir_for(file, "export")?;
        Ok(Self {
            file: file.to_path_buf(),
            staging,
            diff,
            spec,
            annotations: annotations["annotations"].as_object().cloned().unwrap_or_default(),
        })
    }

    /// What to run while the container is frozen: write the rootfs diff.
    pub fn frozen_work(&self) -> impl Fn() -> io::Result<()> + Send + Sync + 'static {
        let (plan, dir) = (self.diff.clone(), self.staging.clone());
        move || {
            plan.write(&dir.join(DIFF_TAR), &dir.join(DELETED_FILES))
                .map(drop)
                .map_err(|e| io::Error::other(format!("rootfs diff: {e:#}")))
        }
    }

    /// CRI-O's `config.dump`, from the CRI-O annotations when the container
    /// has them.
    fn config_dump(&self, id: &str, created: &str) -> Value {
        let ann = |k: &str| self.annotations.get(k).and_then(Value::as_str).map(str::to_string);
        let image = ann("io.kubernetes.cri-o.ImageName").unwrap_or_default();
        // Go's time.Time wants RFC 3339: never an empty string.
        let created = [ann("io.kubernetes.cri-o.Created"), Some(created.to_string())]
            .into_iter()
            .flatten()
            .find(|t| looks_rfc3339(t))
            .unwrap_or_else(crate::logging::now_rfc3339);
        json!({
            "id": id,
            "name": ann("io.kubernetes.cri-o.Name").or_else(|| ann("io.kubernetes.container.name")).unwrap_or_else(|| id.to_string()),
            "rootfsImage": ann("io.kubernetes.cri-o.UserRequestedImage").unwrap_or_else(|| image.clone()),
            "rootfsImageRef": ann("io.kubernetes.cri-o.ImageRef").unwrap_or_default(),
            "rootfsImageName": image,
            "runtime": ann("io.kubernetes.cri-o.RuntimeHandler").unwrap_or_else(|| "stasis".into()),
            "createdTime": created,
            "checkpointedTime": crate::logging::now_rfc3339(),
            "restored": false,
        })
    }

    /// Writes the archive from the finished image (`image`) and work files
    /// (`work`): into `FILE.partial`, then renamed. The private directory
    /// goes only once the archive is complete; on failure it stays, with
    /// the image in it, and the error says where.
    pub fn finish(self, id: &str, created: &str, image: &Path, work: &Path) -> anyhow::Result<()> {
        let partial = PathBuf::from(format!("{}.partial", self.file.display()));
        let result = self.write(&partial, id, created, image, work).and_then(|()| {
            fs::rename(&partial, &self.file)
                .with_context(|| format!("rename {} to {}", partial.display(), self.file.display()))
        });
        match result {
            Ok(()) => {
                let _ = fs::remove_dir_all(&self.staging);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&partial);
                Err(e.context(format!(
                    "writing the archive {} failed; the checkpoint is kept in {}",
                    self.file.display(),
                    image.display()
                )))
            }
        }
    }

    fn write(&self, to: &Path, id: &str, created: &str, image: &Path, work: &Path) -> anyhow::Result<()> {
        let out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .with_context(|| format!("create {}", to.display()))?;
        let mut b = archive::builder(io::BufWriter::new(out));
        let what = || format!("write {}", to.display());
        archive::append_empty_dir(&mut b, CHECKPOINT_DIR).with_context(what)?;
        let config = serde_json::to_vec_pretty(&self.config_dump(id, created))?;
        archive::append_bytes(&mut b, CONFIG_DUMP, &config).with_context(what)?;
        archive::append_bytes(&mut b, SPEC_DUMP, &self.spec).with_context(what)?;
        for (dir, name) in [(&self.staging, DIFF_TAR), (&self.staging, DELETED_FILES), (&work.to_path_buf(), "dump.log"), (&work.to_path_buf(), "stats-dump")] {
            let p = dir.join(name);
            if p.is_file() {
                b.append_path_with_name(&p, name).with_context(what)?;
            } else if name == DIFF_TAR {
                bail!("{} was not written", p.display());
            }
        }
        let mut files = Vec::new();
        for e in archive::sorted_entries(image)? {
            let name = e.file_name();
            let ft = e.file_type()?;
            if !ft.is_file() {
                bail!("{}: {} is not a regular file (the image directory must be flat)", image.display(), name.to_string_lossy());
            }
            // Work files in the image dir (no --work-path) are at the top.
            if image == work && (name == "dump.log" || name == "stats-dump") {
                continue;
            }
            files.push(name);
        }
        // inventory.img last: a cut archive reads as incomplete.
        files.sort_by_key(|n| (n == "inventory.img", n.clone()));
        if files.last().is_none_or(|n| n != "inventory.img") {
            bail!("{}: no inventory.img, the checkpoint is not complete", image.display());
        }
        for name in files {
            let entry = Path::new(CHECKPOINT_DIR).join(&name);
            b.append_path_with_name(image.join(&name), &entry).with_context(what)?;
        }
        let w = b.into_inner().with_context(what)?;
        w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(what)
    }

    /// Removes the private directory (after a failed checkpoint).
    pub fn discard(self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

/// An archive unpacked for a restore: the image in `image`, the rest in a
/// private directory. Dropped without [`Imported::done`], it removes
/// everything it made: a failed restore leaves nothing behind.
pub struct Imported {
    pub image: PathBuf,
    staging: PathBuf,
    /// The image dir is private (no --image-path): removed in any case.
    image_private: bool,
    /// The --image-path existed (empty) before: emptied, not removed.
    image_existed: bool,
    finished: bool,
}

/// Unpacks archive `file` for a restore: `checkpoint/` into `image` (the
/// `--image-path`, which must not exist or be empty) or, when `None`, into
/// a private directory next to the archive. Every entry is checked first
/// (plain relative paths; only regular files, and the `checkpoint/`
/// directory, flat; a complete image; a valid rootfs diff), and nothing is
/// left behind when one is refused.
pub fn import(file: &Path, image: Option<&Path>) -> anyhow::Result<Imported> {
    let staging = private_dir_for(file, "import")?;
    let mut imp = Imported {
        image: image.map_or_else(|| staging.join(CHECKPOINT_DIR), Path::to_path_buf),
        staging,
        image_private: image.is_none(),
        image_existed: image.is_some_and(Path::exists),
        finished: false,
    };
    if let Some(dir) = image {
        if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            imp.image_private = false;
            // Not ours to clean up: forget it before refusing.
            imp.image = imp.staging.join(CHECKPOINT_DIR);
            bail!("--image-path {}: not empty (an imported archive is unpacked into a new or empty directory)", dir.display());
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&imp.image)
        .with_context(|| format!("create {}", imp.image.display()))?;
    imp.unpack(file).with_context(|| format!("archive {}", file.display()))?;
    Ok(imp)
}

impl Imported {
    fn unpack(&mut self, file: &Path) -> anyhow::Result<()> {
        let f = File::open(file).context("open")?;
        let mut ar = tar::Archive::new(io::BufReader::new(f));
        let mut seen_checkpoint_dir = false;
        for entry in ar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let rel = archive::plain_relative(&path)
                .ok_or_else(|| anyhow!("refusing entry {}: not a relative path inside the archive", path.display()))?;
            let parts: Vec<&std::ffi::OsStr> = rel
                .components()
                .map(|c| match c {
                    Component::Normal(n) => n,
                    _ => unreachable!("plain_relative keeps normal components only"),
                })
                .collect();
            let kind = entry.header().entry_type();
            let dest = match parts.as_slice() {
                [d] if *d == CHECKPOINT_DIR && kind.is_dir() => {
                    seen_checkpoint_dir = true;
                    continue;
                }
                [d, name] if *d == CHECKPOINT_DIR && kind.is_file() => self.image.join(name),
                [d, ..] if *d == CHECKPOINT_DIR => {
                    bail!("refusing entry {}: the checkpoint directory holds regular files only, flat", path.display())
                }
                [name] if kind.is_file() && KNOWN.iter().any(|k| *name == *k) => self.staging.join(name),
                // Other engines' extras (container log, volumes …) are not
                // needed: skipped, but still no links or devices.
                _ if kind.is_file() || kind.is_dir() => continue,
                _ => bail!("refusing entry {}: {:?} entries are not accepted here", path.display(), kind),
            };
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dest)
                .with_context(|| format!("create {}", dest.display()))?;
            let want = entry.size();
            let got = io::copy(&mut (&mut entry).take(want), &mut out).with_context(|| format!("write {}", dest.display()))?;
            if got != want {
                bail!("{}: truncated ({got} of {want} bytes)", path.display());
            }
        }
        if !seen_checkpoint_dir && !self.image.join("inventory.img").exists() {
            bail!("no checkpoint directory in the archive");
        }
        if !self.image.join("inventory.img").is_file() {
            bail!("checkpoint/inventory.img is missing: the archive is incomplete");
        }
        // The rootfs diff is checked now, before the restore touches anything.
        if let Some(t) = self.file(DIFF_TAR) {
            archive::scan(&t)?;
        }
        if let Some(d) = self.file(DELETED_FILES) {
            rootfs_diff::read_deleted(&d)?;
        }
        Ok(())
    }

    /// An unpacked top-level file, if the archive had it.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        Some(self.staging.join(name)).filter(|p| p.is_file())
    }

    /// Applies the archive's rootfs diff to `rootfs` (the new container's).
    pub fn apply_rootfs(&self, rootfs: &Path) -> anyhow::Result<usize> {
        rootfs_diff::apply(rootfs, self.file(DIFF_TAR).as_deref(), self.file(DELETED_FILES).as_deref())
            .with_context(|| format!("apply the rootfs diff to {}", rootfs.display()))
    }

    /// The restore succeeded: the private directory goes (with the image
    /// when it was private); an `--image-path` keeps the image.
    pub fn done(mut self) {
        self.finished = true;
        let _ = fs::remove_dir_all(&self.staging);
    }
}

impl Drop for Imported {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if !self.image_private && self.image_existed {
            for e in fs::read_dir(&self.image).into_iter().flatten().flatten() {
                let _ = fs::remove_file(e.path());
            }
        } else if !self.image_private {
            let _ = fs::remove_dir_all(&self.image);
        }
        let _ = fs::remove_dir_all(&self.staging);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_times_go_can_parse() {
        assert!(looks_rfc3339("2026-11-23T16:10:52.123565645Z"));
        assert!(looks_rfc3339("2026-11-23T16:10:52+01:00"));
        assert!(!looks_rfc3339(""));
        assert!(!looks_rfc3339("2026-11-23 16:10:52 +0000 UTC"));
    }
}
