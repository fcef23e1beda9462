//! The changes a container made to its root filesystem, as podman and
//! CRI-O carry them in a checkpoint archive: `rootfs-diff.tar` (files added
//! or changed, paths relative to the rootfs) and `deleted.files` (a JSON list
//! of removed paths, `/`-rooted). A restore applies them to a fresh copy of
//! the image before the processes come back.
//!
//! Where the diff comes from:
//! * the rootfs is an overlay mount (what CRI-O, containerd and podman give a
//!   container): its upper directory says what changed; whiteouts (0/0
//!   character devices) are deletions, and an opaque directory deletes
//!   whatever its lower layers hold that the upper does not. Contents and
//!   metadata are read through the mounted rootfs, not the upper dir, so
//!   metadata-only copies (`metacopy=on`) carry their data, and a renamed
//!   directory (`redirect_dir`) is carried whole;
//! * `--rootfs-base DIR` (an unmodified copy of the image's rootfs): every
//!   entry whose type, mode, owner, size, contents or link target differs
//!   from DIR's is in the diff, and what DIR has that the rootfs lacks is
//!   deleted (mtimes are not compared: copies change them);
//! * anything else is refused: a plain directory has no record of what the
//!   image held.
//!
//! The container's mount destinations (from config.json) are left out, as
//! CRI-O does: the runtime mounts something else over them. Device nodes
//! and sockets are left out too (a restore would refuse device nodes).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::archive;

pub const DIFF_TAR: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Overlay { upper: PathBuf, lowers: Vec<PathBuf> },
    Base(PathBuf),
}

/// How to compute the diff of one container's rootfs.
#[derive(Clone, Debug)]
pub struct Plan {
    rootfs: PathBuf,
    source: Source,
    /// Mount destinations, relative to the rootfs.
    skip: Vec<PathBuf>,
}

/// What [`Plan::write`] put in the archive.
#[derive(Debug, Default)]
pub struct Summary {
    pub entries: usize,
    pub deleted: usize,
    pub skipped: usize,
}

/// Decides where the diff of `rootfs` comes from (see the module doc),
/// before anything is touched. `mounts` are the container's mount
/// destinations.
pub fn plan(rootfs: &Path, base: Option<&Path>, mounts: &[String]) -> anyhow::Result<Plan> {
    let skip = mounts.iter().filter_map(|m| archive::plain_relative(Path::new(m.trim_start_matches('/')))).collect();
    let source = match base {
        Some(b) => {
            if !b.is_dir() {
                bail!("--rootfs-base {}: not a directory", b.display());
            }
            Source::Base(b.to_path_buf())
        }
        None => {
            let canon = fs::canonicalize(rootfs).with_context(|| format!("find the rootfs {}", rootfs.display()))?;
            match overlay_at(&canon)? {
                Some((upper, lowers)) => Source::Overlay { upper, lowers },
                None => bail!(
                    "cannot tell what the container changed in its rootfs {}: it is not an overlay mount \
                     (whose upper directory would be the diff); pass --rootfs-base DIR, an unmodified copy \
                     of the image's rootfs, to compare against",
                    rootfs.display()
                ),
            }
        }
    };
    Ok(Plan { rootfs: rootfs.to_path_buf(), source, skip })
}

impl Plan {
    fn skipped(&self, rel: &Path) -> bool {
        self.skip.iter().any(|s| rel.starts_with(s))
    }

    /// Writes `tar` (always) and `deleted` (only when something was
    /// deleted), both new files.
    pub fn write(&self, tar: &Path, deleted_file: &Path) -> anyhow::Result<Summary> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tar)
            .with_context(|| format!("create {}", tar.display()))?;
        let mut w = Walk { plan: self, b: archive::builder(io::BufWriter::new(file)), deleted: Vec::new(), sum: Summary::default() };
        match &self.source {
            Source::Overlay { upper, lowers } => w.upper(upper, lowers, Path::new(""))?,
            Source::Base(base) => w.compare(base, Path::new(""))?,
        }
        let Walk { b, mut deleted, mut sum, .. } = w;
        let out = b.into_inner().with_context(|| format!("write {}", tar.display()))?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("write {}", tar.display()))?;
        deleted.sort();
        deleted.dedup();
        sum.deleted = deleted.len();
        if !deleted.is_empty() {
            let json = serde_json::to_vec(&deleted)?;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(deleted_file)
                .and_then(|mut f| io::Write::write_all(&mut f, &json))
                .with_context(|| format!("write {}", deleted_file.display()))?;
        }
        Ok(sum)
    }
}

struct Walk<'a> {
    plan: &'a Plan,
    b: tar::Builder<io::BufWriter<File>>,
    deleted: Vec<String>,
    sum: Summary,
}

impl Walk<'_> {
    /// Adds `path` (any type) as `rel`; device nodes and sockets are counted
    /// as skipped.
    fn add(&mut self, path: &Path, rel: &Path, md: &fs::Metadata) -> anyhow::Result<()> {
        let ft = md.file_type();
        if ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
            self.sum.skipped += 1;
            return Ok(());
        }
        self.b
            .append_path_with_name(path, rel)
            .with_context(|| format!("archive {}", path.display()))?;
        self.sum.entries += 1;
        Ok(())
    }

    fn delete(&mut self, rel: &Path) {
        self.deleted.push(format!("/{}", rel.display()));
    }

    /// An overlay upper directory, from `rel` down.
    fn upper(&mut self, upper: &Path, lowers: &[PathBuf], rel: &Path) -> anyhow::Result<()> {
        for e in archive::sorted_entries(&upper.join(rel))? {
            let r = rel.join(e.file_name());
            if self.plan.skipped(&r) {
                continue;
            }
            let path = upper.join(&r);
            let md = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
            if md.file_type().is_char_device() && md.rdev() == 0 {
                self.delete(&r);
                continue;
            }
            let merged = self.plan.rootfs.join(&r);
            let mmd = fs::symlink_metadata(&merged).with_context(|| format!("stat {}", merged.display()))?;
            self.add(&merged, &r, &mmd)?;
            if md.is_dir() && has_xattr(&path, &[c"trusted.overlay.redirect", c"user.overlay.redirect"]) {
                // A renamed directory: its contents are in the lower layers.
                self.everything(&r)?;
                continue;
            }
            if md.is_dir() {
                if is_opaque(&path) {
                    // Everything the lower layers have here is gone, but
                    // what the upper has again.
                    for lower in lowers {
                        let Ok(entries) = fs::read_dir(lower.join(&r)) else { continue };
                        for le in entries.flatten() {
                            if fs::symlink_metadata(path.join(le.file_name())).is_err() {
                                self.delete(&r.join(le.file_name()));
                            }
                        }
                    }
                }
                self.upper(upper, lowers, &r)?;
            }
        }
        Ok(())
    }

    /// Everything under `rel` in the mounted rootfs.
    fn everything(&mut self, rel: &Path) -> anyhow::Result<()> {
        for e in archive::sorted_entries(&self.plan.rootfs.join(rel))? {
            let r = rel.join(e.file_name());
            if self.plan.skipped(&r) {
                continue;
            }
            let path = self.plan.rootfs.join(&r);
            let md = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
            self.add(&path, &r, &md)?;
            if md.is_dir() {
                self.everything(&r)?;
            }
        }
        Ok(())
    }

    /// The rootfs against an unmodified `base`, from `rel` down.
    fn compare(&mut self, base: &Path, rel: &Path) -> anyhow::Result<()> {
        let root = self.plan.rootfs.clone();
        let here = archive::sorted_entries(&root.join(rel))?;
        for e in &here {
            let r = rel.join(e.file_name());
            if self.plan.skipped(&r) {
                continue;
            }
            let path = root.join(&r);
            let md = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
            let old = fs::symlink_metadata(base.join(&r)).ok();
            let changed = match &old {
                None => true,
                Some(old) => differs(&path, &md, &base.join(&r), old)?,
            };
            if changed {
                self.add(&path, &r, &md)?;
            }
            if md.is_dir() {
                self.compare(base, &r)?;
            }
        }
        let Ok(gone) = fs::read_dir(base.join(rel)) else { return Ok(()) };
        for g in gone.flatten() {
            let r = rel.join(g.file_name());
            if !self.plan.skipped(&r) && fs::symlink_metadata(root.join(&r)).is_err() {
                self.delete(&r);
            }
        }
        Ok(())
    }
}

/// Whether `now` (at `a`) differs from `old` (at `b`) in type, mode, owner,
/// size, link target or contents.
fn differs(a: &Path, now: &fs::Metadata, b: &Path, old: &fs::Metadata) -> anyhow::Result<bool> {
    if now.file_type() != old.file_type() || now.mode() != old.mode() || now.uid() != old.uid() || now.gid() != old.gid() {
        return Ok(true);
    }
    if now.file_type().is_symlink() {
        return Ok(fs::read_link(a)? != fs::read_link(b)?);
    }
    if now.is_file() {
        return Ok(now.len() != old.len() || !same_contents(a, b)?);
    }
    Ok(false)
}

fn same_contents(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether overlayfs marked directory `path` opaque (trusted or user xattr).
fn is_opaque(path: &Path) -> bool {
    xattr_first_byte(path, &[c"trusted.overlay.opaque", c"user.overlay.opaque"]) == Some(b'y')
}

/// Whether `path` has any of the extended attributes `names`.
fn has_xattr(path: &Path, names: &[&std::ffi::CStr]) -> bool {
    xattr_first_byte(path, names).is_some()
}

/// The first byte of the first of `names` that `path` has (not following a
/// symlink); `None` when it has none of them.
fn xattr_first_byte(path: &Path, names: &[&std::ffi::CStr]) -> Option<u8> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    names.iter().find_map(|name| {
        let mut v = [0u8; 256];
        // SAFETY: both strings are NUL-terminated and live across the call;
        // the kernel writes at most v.len() bytes into v.
        let n = unsafe { libc::lgetxattr(cpath.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        // ERANGE (a longer value) still means the attribute is there.
        let present = n >= 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE);
        present.then(|| if n >= 1 { v[0] } else { 0 })
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The upper and lower directories of the overlay mounted at `point` (the
/// topmost mount there), from our mountinfo.
fn overlay_at(point: &Path) -> anyhow::Result<Option<(PathBuf, Vec<PathBuf>)>> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(parse_overlay(&text, point))
}

fn parse_overlay(mountinfo: &str, point: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
    let mut found = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let Some(mp) = pre.split_whitespace().nth(4) else { continue };
        if Path::new(&unescape(mp)) != point {
            continue;
        }
        let mut f = post.split_whitespace();
        // A later mount on the same point hides the earlier ones.
        found = None;
        if f.next() != Some("overlay") {
            continue;
        }
        let opts = f.nth(1).unwrap_or("");
        let (mut upper, mut lowers) = (None, Vec::new());
        for o in opts.split(',') {
            if let Some(u) = o.strip_prefix("upperdir=") {
                upper = Some(PathBuf::from(unescape(u)));
            } else if let Some(l) = o.strip_prefix("lowerdir=") {
                lowers.extend(l.split(':').filter(|s| !s.is_empty()).map(|s| PathBuf::from(unescape(s))));
            } else if let Some(l) = o.strip_prefix("lowerdir+=") {
                lowers.push(PathBuf::from(unescape(l)));
            }
        }
        found = upper.map(|u| (u, lowers));
    }
    found
}

/// Applies a diff to `rootfs`: checks both files first (nothing is changed
/// when either is bad), then removes the deleted paths and unpacks the tar.
pub fn apply(rootfs: &Path, tar: Option<&Path>, deleted: Option<&Path>) -> anyhow::Result<usize> {
    let gone = match deleted {
        Some(d) => read_deleted(d)?,
        None => Vec::new(),
    };
    if let Some(t) = tar {
        archive::scan(t)?;
    }
    for rel in &gone {
        archive::check_parents(rootfs, rel)?;
        let p = rootfs.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
            Err(_) => Ok(()),
        }
        .with_context(|| format!("remove {}", p.display()))?;
    }
    match tar {
        Some(t) => Ok(archive::extract(t, rootfs)?.entries),
        None => Ok(0),
    }
}

/// `deleted.files`: a JSON list of paths inside the rootfs.
pub fn read_deleted(file: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let list: Vec<String> =
        serde_json::from_slice(&text).with_context(|| format!("{}: not a JSON list of paths", file.display()))?;
    list.iter()
        .map(|p| {
            archive::plain_relative(Path::new(p.trim_start_matches('/')))
                .with_context(|| format!("{}: refusing path {p:?}", file.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_from_mountinfo() {
        let mi = "22 1 0:21 / /proc rw - proc proc rw\n\
                  90 22 0:50 / /tmp/b\\040x/rootfs rw,relatime - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/u\\054p,workdir=/w\n";
        let (u, l) = parse_overlay(mi, Path::new("/tmp/b x/rootfs")).unwrap();
        assert_eq!(u, Path::new("/u,p"));
        assert_eq!(l, vec![PathBuf::from("/l1"), PathBuf::from("/l2")]);
        // A bind mount on top hides the overlay.
        let hidden = format!("{mi}91 90 0:51 / /tmp/b\\040x/rootfs rw - ext4 /dev/sda rw\n");
        assert!(parse_overlay(&hidden, Path::new("/tmp/b x/rootfs")).is_none());
        assert!(parse_overlay(mi, Path::new("/elsewhere")).is_none());
    }

    #[test]
    fn base_comparison_finds_changes_and_deletions() {
        let d = std::env::temp_dir().join(format!("stasis-diff-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let (base, root, fresh) = (d.join("base"), d.join("root"), d.join("fresh"));
        for r in [&base, &root, &fresh] {
            fs::create_dir_all(r.join("etc")).unwrap();
            fs::create_dir_all(r.join("proc/x")).unwrap();
            fs::write(r.join("etc/same"), "s").unwrap();
            fs::write(r.join("etc/changed"), "old").unwrap();
            fs::write(r.join("etc/gone"), "g").unwrap();
        }
        fs::write(root.join("etc/changed"), "new").unwrap();
        fs::remove_file(root.join("etc/gone")).unwrap();
        fs::write(root.join("etc/added"), "a").unwrap();
        fs::write(root.join("proc/x/mounted"), "m").unwrap();
        let plan = plan(&root, Some(&base), &["/proc".into()]).unwrap();
        let (tar, del) = (d.join("diff.tar"), d.join("deleted.files"));
        let sum = plan.write(&tar, &del).unwrap();
        assert_eq!((sum.entries, sum.deleted), (2, 1), "{sum:?}");
        assert_eq!(read_deleted(&del).unwrap(), vec![PathBuf::from("etc/gone")]);
        apply(&fresh, Some(&tar), Some(&del)).unwrap();
        assert_eq!(fs::read_to_string(fresh.join("etc/changed")).unwrap(), "new");
        assert_eq!(fs::read_to_string(fresh.join("etc/added")).unwrap(), "a");
        assert!(!fresh.join("etc/gone").exists() && fresh.join("etc/same").exists());
        // A path escaping the rootfs in deleted.files is refused, nothing removed.
        fs::write(&del, r#"["/etc/same", "/../outside"]"#).unwrap();
        assert!(format!("{:#}", apply(&fresh, None, Some(&del)).unwrap_err()).contains("refusing path"));
        assert!(fresh.join("etc/same").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_plain_directory_without_base_is_refused() {
        let d = std::env::temp_dir().join(format!("stasis-plain-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let err = plan(&d, None, &[]).unwrap_err().to_string();
        let _ = fs::remove_dir(&d);
        assert!(err.contains("--rootfs-base"), "{err}");
    }
}
