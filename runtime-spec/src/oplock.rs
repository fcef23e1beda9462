//! One checkpoint or restore of a container at a time.
//!
//! `stasis checkpoint ID` and `stasis restore ID` hold an exclusive
//! `flock` on `/run/stasis/<root-key>/<id>:lock` (0600, beside the
//! container's private directory; `:` is not allowed in runc ids, so the
//! name never clashes with a private directory). A second operation on the
//! same id is refused at once (`LOCK_NB`), before it looks at or touches
//! anything, naming what holds the lock (the holder writes its verb into
//! the file). The kernel drops the lock when its holder dies, even by
//! SIGKILL.
//!
//! The file is removed by its holder, while still locked, at release. A
//! process that opened the old file meanwhile finds, once it has the lock,
//! that the path no longer names the inode it locked, and starts over.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::cli::GlobalOpts;
use crate::restore_bundle;

/// A held operation lock; released (and its file removed) on drop.
#[derive(Debug)]
pub struct OpLock {
    /// Held open (locked) until the lock is dropped.
    _file: File,
    path: PathBuf,
}

/// The lock file of container `id` of `global`'s root.
pub fn lock_path(global: &GlobalOpts, id: &str) -> anyhow::Result<PathBuf> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        bail!("invalid container id {id:?}");
    }
    let dir = restore_bundle::private_dir(global, id);
    let parent = dir.parent().context("private dir has no parent")?;
    Ok(parent.join(format!("{id}:lock")))
}

/// Takes the lock of container `id` for `op` ("checkpoint", "restore"), or
/// fails with "`<op of the holder>` of container `<id>` is already in
/// progress".
pub fn acquire(global: &GlobalOpts, id: &str, op: &str) -> anyhow::Result<OpLock> {
    let path = lock_path(global, id)?;
    let parent = path.parent().context("lock file has no parent")?;
    for _ in 0..20 {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            // The directory went with another holder's release: again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                let held = held.trim();
                if held.is_empty() {
                    bail!("another checkpoint or restore of container {id} is already in progress");
                }
                bail!("{held} of container {id} is already in progress");
            }
            return Err(err).with_context(|| format!("lock {}", path.display()));
        }
        // Ours only if the path still names what we locked (not a file its
        // previous holder removed after we opened it).
        let locked = file.metadata().map(|m| (m.dev(), m.ino()));
        let named = fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()));
        match (locked, named) {
            (Ok(a), Ok(b)) if a == b => {}
            _ => continue,
        }
        file.set_len(0).context("truncate the lock file")?;
        file.rewind().context("rewind the lock file")?;
        file.write_all(format!("{op}\n").as_bytes())
            .context("write the lock file")?;
        // Above the fds a restore hands to the container (3..=6), which
        // it closes or replaces; close-on-exec, so no child inherits it.
        // SAFETY: fcntl on an fd we own; the result is a new fd we own.
        let high = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 16) };
        if high < 0 {
            return Err(std::io::Error::last_os_error()).context("duplicate the lock fd");
        }
        // SAFETY: fcntl just returned this fd, which nothing else owns.
        let file = unsafe { File::from_raw_fd(high) };
        return Ok(OpLock { _file: file, path });
    }
    bail!("cannot lock {}: it keeps being replaced", path.display())
}

impl Drop for OpLock {
    fn drop(&mut self) {
        // Removed while still held (see the module comment); then the
        // root-key directory, if nothing else is in it.
        let _ = fs::remove_file(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = fs::remove_dir(parent);
        }
        // `self._file` is closed, which unlocks, after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn global(root: &Path) -> GlobalOpts {
        GlobalOpts {
            root: Some(root.into()),
            ..Default::default()
        }
    }

    #[test]
    fn second_holder_is_refused_and_the_file_goes_at_release() {
        let root = std::env::temp_dir().join(format!("stasis-oplock-{}", std::process::id()));
        let g = global(&root);
        let id = format!("lock-test-{}", std::process::id());
        let lock = match acquire(&g, &id, "checkpoint") {
            Ok(l) => l,
            // Not root: /run/stasis is not ours to write.
            Err(e) if format!("{e:#}").contains("ermission denied") => return,
            Err(e) => panic!("{e:#}"),
        };
        let path = lock.path.clone();
        assert!(path.is_file());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let err = acquire(&g, &id, "restore").unwrap_err().to_string();
        assert_eq!(
            err,
            format!("checkpoint of container {id} is already in progress")
        );
        drop(lock);
        assert!(!path.exists());
        let again = acquire(&g, &id, "restore").unwrap();
        drop(again);
        assert!(!path.exists());
    }

    #[test]
    fn bad_ids_are_refused() {
        let g = global(Path::new("/nonexistent"));
        for id in ["", ".", "..", "a/b", "../x"] {
            assert!(lock_path(&g, id).is_err(), "{id:?}");
        }
        assert!(lock_path(&g, "c1").unwrap().ends_with("c1:lock"));
    }
}
