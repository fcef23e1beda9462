//! The contents of a container's tmpfs mounts (`/dev/shm` and the like):
//! they live only in memory and would be lost, so a checkpoint archives each
//! one into the image (while the container is frozen, so the files match the
//! memory image) and a restore unpacks them into the new container's mounts
//! before its processes come back. `/dev` itself (device nodes made by the
//! runtime) is left alone. Archives are plain tar files (`crate::archive`,
//! unpacked only after every entry is checked), listed in `tmpfs.json`; the
//! image directory stays flat.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use stasis_checkpoint::FrozenHook;

const INDEX: &str = "tmpfs.json";

/// Mount points of tmpfs mounts in the mount namespace of `pid`, as seen inside it.
fn tmpfs_mounts(pid: i32) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut f = pre.split_whitespace();
            let root = f.nth(3)?;
            let point = f.next()?;
            // Whole tmpfs mounts only: not /dev (the runtime's device nodes),
            // not the runtime's masks over /proc and /sys, not bind mounts
            // of a piece of a tmpfs (root other than "/").
            let masked = point.starts_with("/proc") || point.starts_with("/sys");
            (post.starts_with("tmpfs ") && root == "/" && point != "/dev" && !masked && point.starts_with('/'))
                .then(|| point.replace("\\040", " "))
        })
        .collect())
}

/// A hook for the engine that archives every tmpfs of container init `pid`
/// into `image_dir`.
pub fn saver(pid: i32, image_dir: &Path) -> FrozenHook {
    let dir: PathBuf = image_dir.to_path_buf();
    FrozenHook(Arc::new(move || {
        let mut index = Vec::new();
        for (i, point) in tmpfs_mounts(pid)?.into_iter().enumerate() {
            let file = format!("tmpfs-{i}.tar");
            let src = PathBuf::from(format!("/proc/{pid}/root{point}"));
            let dst = dir.join(&file);
            crate::archive::pack_dir(&src, &dst).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            index.push(serde_json::json!({ "mountpoint": point, "file": file }));
        }
        let json = serde_json::to_vec(&index).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(INDEX), json)
    }))
}

/// Unpacks the archives of `image_dir` into the mounts of the new container
/// whose (not yet started) init is `pid`.
pub fn restore(pid: i32, image_dir: &Path) -> anyhow::Result<()> {
    let path = image_dir.join(INDEX);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let index: Vec<serde_json::Value> = serde_json::from_str(&text).with_context(|| format!("read {}", path.display()))?;
    for e in index {
        let (Some(point), Some(file)) = (e["mountpoint"].as_str(), e["file"].as_str()) else {
            bail!("{}: malformed entry", path.display());
        };
        if !point.starts_with('/') || point.split('/').any(|c| c == "..") || file.contains('/') {
            bail!("{}: refusing entry {point:?} -> {file:?}", path.display());
        }
        let dst = PathBuf::from(format!("/proc/{pid}/root{point}"));
        if !dst.is_dir() {
            bail!("the restored container has no {point} to restore its tmpfs contents into");
        }
        let src = image_dir.join(file);
        crate::archive::unpack(&src, &dst).with_context(|| format!("restore the contents of {point}"))?;
    }
    Ok(())
}
