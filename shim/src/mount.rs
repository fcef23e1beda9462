//! The task's rootfs: containerd's mounts (an overlay or bind snapshot)
//! mounted on `<bundle>/rootfs`. Done here with mount(2) directly: the
//! containerd-shim crate's helper forks and waits through the crate's own
//! reaper, which this shim replaces with its own (reaper.rs).

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::MsFlags;

use crate::error::{io_err, Result, ShimError};

/// mount(8) option names that are flags: (name, flag, clears it).
const FLAGS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, false),
    ("rw", MsFlags::MS_RDONLY, true),
    ("bind", MsFlags::MS_BIND, false),
    ("rbind", MsFlags::MS_BIND.union(MsFlags::MS_REC), false),
    ("nosuid", MsFlags::MS_NOSUID, false),
    ("suid", MsFlags::MS_NOSUID, true),
    ("nodev", MsFlags::MS_NODEV, false),
    ("dev", MsFlags::MS_NODEV, true),
    ("noexec", MsFlags::MS_NOEXEC, false),
    ("exec", MsFlags::MS_NOEXEC, true),
    ("sync", MsFlags::MS_SYNCHRONOUS, false),
    ("async", MsFlags::MS_SYNCHRONOUS, true),
    ("noatime", MsFlags::MS_NOATIME, false),
    ("atime", MsFlags::MS_NOATIME, true),
    ("nodiratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, false),
    ("remount", MsFlags::MS_REMOUNT, false),
    ("defaults", MsFlags::empty(), false),
];

/// Splits mount options into flags and the filesystem's data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match FLAGS.iter().find(|(name, _, _)| name == o) {
            Some((_, f, true)) => flags.remove(*f),
            Some((_, f, false)) => flags.insert(*f),
            None => data.push(o.as_str()),
        }
    }
    (flags, data.join(","))
}

/// Mounts containerd's rootfs mounts on `<bundle>/rootfs`; `None` when
/// there are none (the bundle brings its own rootfs).
pub fn mount_rootfs(bundle: &Path, mounts: &[Mount]) -> Result<Option<PathBuf>> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(io_err(format!("create {}", target.display())))?;
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        // The kernel takes one page of options; containerd's runc shim
        // shortens long overlay lowerdir lists by changing directory,
        // which this multi-threaded shim does not do.
        if data.len() >= 4096 {
            unmount(&target);
            return Err(ShimError::InvalidArgument(format!(
                "rootfs mount options of {} bytes (too many image layers)",
                data.len()
            )));
        }
        let fstype = (!m.type_.is_empty() && m.type_ != "bind").then_some(m.type_.as_str());
        let res = nix::mount::mount(
            Some(m.source.as_str()),
            &target,
            fstype,
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        if let Err(e) = res {
            unmount(&target);
            return Err(ShimError::Runtime(format!(
                "mount {} {} on {}: {e}",
                m.type_,
                m.source,
                target.display()
            )));
        }
        // A read-only bind needs a remount to take effect.
        if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
            let _ = nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            );
        }
    }
    Ok(Some(target))
}

/// Unmounts everything stacked on `target`.
pub fn unmount(target: &Path) {
    while nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_data_are_split() {
        let opts: Vec<String> = [
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
            "rw",
            "nosuid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (flags, data) = parse_options(&opts);
        assert_eq!(flags, MsFlags::MS_NOSUID);
        assert_eq!(data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
        let (flags, data) = parse_options(&["rbind".to_string(), "ro".to_string()]);
        assert_eq!(
            flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert!(data.is_empty());
    }
}
