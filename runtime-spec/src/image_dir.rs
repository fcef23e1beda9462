//! Where a checkpoint writes its image.
//!
//! The engine never overwrites an image file. Podman, however, checkpoints
//! into the same `<userdata>/checkpoint` every time, and that directory still
//! holds the previous image after `checkpoint --leave-running` or `restore
//! --keep` (runc's CRIU simply truncates the old files). So when the image
//! directory holds nothing but an earlier stasis image, the new image is
//! written into a fresh sibling directory, which takes the old one's place
//! (an atomic exchange) only once it is complete: a failed checkpoint leaves
//! the earlier image as it was. A directory holding anything else is written
//! into directly, and the engine refuses to overwrite what it finds there.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{renameat2, RenameFlags};
use stasis_checkpoint::image;

/// The files stasis writes into an image (or default work) directory.
fn is_stasis_file(name: &str) -> bool {
    const NAMES: [&str; 10] = [
        "inventory.img",
        "tree.img",
        "pages.img",
        "predump.img",
        "descriptors.json",
        "tmpfs.json",
        "dump.log",
        "stats-dump",
        "restore.log",
        "stats-restore",
    ];
    NAMES.contains(&name)
        || name
            .strip_prefix("tmpfs-")
            .and_then(|n| n.strip_suffix(".tar"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `dir` is a real directory holding an earlier image and only
/// stasis' regular files.
fn holds_only_an_old_image(dir: &Path) -> bool {
    let Ok(md) = fs::symlink_metadata(dir) else {
        return false;
    };
    if !md.is_dir() {
        return false;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut image = false;
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { return false };
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if !regular || !is_stasis_file(name) {
            return false;
        }
        image |= name == "inventory.img" || name == "predump.img" || name == "pages.img";
    }
    image
}

/// The directory a checkpoint writes into, and what becomes of it.
#[derive(Debug)]
pub enum Target {
    /// The image directory itself.
    Direct(PathBuf),
    /// A sibling that replaces `image` once the new image is complete.
    Staged { image: PathBuf, staging: PathBuf },
}

impl Target {
    /// Creates the directory the image is written into (0700).
    pub fn prepare(image_dir: &Path) -> anyhow::Result<Self> {
        let target = match (image_dir.parent(), image_dir.file_name()) {
            (Some(parent), Some(name)) if holds_only_an_old_image(image_dir) => {
                let staging = parent.join(format!(
                    ".{}.stasis-new-{}",
                    name.to_string_lossy(),
                    std::process::id()
                ));
                // A leftover of a stasis killed mid-checkpoint (same pid, so
                // long ago): never an image anyone could use.
                let _ = fs::remove_dir_all(&staging);
                Self::Staged {
                    image: image_dir.to_path_buf(),
                    staging,
                }
            }
            _ => Self::Direct(image_dir.to_path_buf()),
        };
        image::create_image_dir(target.dir())
            .with_context(|| format!("create image directory {}", target.dir().display()))?;
        Ok(target)
    }

    /// Where the engine writes.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Direct(d) => d,
            Self::Staged { staging, .. } => staging,
        }
    }

    /// The new image is complete: it takes the old one's place, which is
    /// removed.
    pub fn commit(self) -> anyhow::Result<()> {
        let Self::Staged { image, staging } = self else {
            return Ok(());
        };
        match renameat2(None, &staging, None, &image, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => {}
            // A file system without RENAME_EXCHANGE: move the old image
            // aside, then the new one in.
            Err(nix::errno::Errno::EINVAL) => {
                let old = staging.with_extension("old");
                fs::rename(&image, &old)
                    .and_then(|()| fs::rename(&staging, &image))
                    .with_context(|| {
                        format!(
                            "move the new image {} to {}",
                            staging.display(),
                            image.display()
                        )
                    })?;
                let _ = fs::remove_dir_all(&old);
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "replace the earlier image in {} with the new one (left in {})",
                        image.display(),
                        staging.display()
                    )
                })
            }
        }
        // `staging` now holds the earlier image.
        let _ = fs::remove_dir_all(&staging);
        Ok(())
    }

    /// The checkpoint failed: the new directory goes, an earlier image stays.
    pub fn abandon(self) {
        if let Self::Staged { staging, .. } = self {
            let _ = fs::remove_dir_all(staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new() -> Self {
            let t = std::env::temp_dir().join("stasis-imgdir.XXXXXX");
            Self(nix::unistd::mkdtemp(&t).unwrap())
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn put(dir: &Path, names: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for n in names {
            fs::write(dir.join(n), n).unwrap();
        }
    }

    #[test]
    fn a_new_or_empty_directory_is_written_directly() {
        let t = Tmp::new();
        let img = t.0.join("a/checkpoint");
        let target = Target::prepare(&img).unwrap();
        assert_eq!(target.dir(), img);
        assert!(img.is_dir());
        target.commit().unwrap();
        let again = Target::prepare(&img).unwrap();
        assert_eq!(again.dir(), img);
    }

    #[test]
    fn an_earlier_image_is_replaced_only_on_commit() {
        let t = Tmp::new();
        let img = t.0.join("checkpoint");
        let old = ["inventory.img", "tree.img", "pages.img", "descriptors.json", "tmpfs-0.tar", "tmpfs.json"];
        put(&img, &old);

        // Abandoned: the earlier image is untouched, the staging dir gone.
        let target = Target::prepare(&img).unwrap();
        assert_ne!(target.dir(), img);
        assert_eq!(target.dir().parent(), img.parent());
        put(target.dir(), &["pages.img"]);
        target.abandon();
        let mut names: Vec<String> =
            fs::read_dir(&img).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut want: Vec<String> = old.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(fs::read_dir(&t.0).unwrap().count(), 1, "staging dir left behind");

        // Committed: only the new files remain, nothing else in the parent.
        let target = Target::prepare(&img).unwrap();
        fs::write(target.dir().join("inventory.img"), "new").unwrap();
        target.commit().unwrap();
        assert_eq!(fs::read_to_string(img.join("inventory.img")).unwrap(), "new");
        assert_eq!(fs::read_dir(&img).unwrap().count(), 1);
        assert_eq!(fs::read_dir(&t.0).unwrap().count(), 1, "old image left behind");
    }

    #[test]
    fn foreign_files_or_links_mean_direct_writes() {
        let t = Tmp::new();
        let img = t.0.join("checkpoint");
        put(&img, &["inventory.img", "notes.txt"]);
        assert_eq!(Target::prepare(&img).unwrap().dir(), img);
        fs::remove_file(img.join("notes.txt")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", img.join("tree.img")).unwrap();
        assert_eq!(Target::prepare(&img).unwrap().dir(), img);
        // Only logs, no image: nothing to keep apart from.
        let logs = t.0.join("logs");
        put(&logs, &["dump.log", "stats-dump"]);
        assert_eq!(Target::prepare(&logs).unwrap().dir(), logs);
    }

    #[test]
    fn stasis_names() {
        for n in ["tmpfs-0.tar", "tmpfs-12.tar", "inventory.img", "stats-dump"] {
            assert!(is_stasis_file(n), "{n}");
        }
        for n in ["tmpfs-.tar", "tmpfs-x.tar", "rootfs-diff.tar", "config.dump"] {
            assert!(!is_stasis_file(n), "{n}");
        }
    }
}
