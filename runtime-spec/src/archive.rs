//! Tar archives, read and written in-process with the `tar` crate: the
//! contents of a container's tmpfs mounts (`tmpfs.rs`), the rootfs diff and
//! the checkpoint archive of kubelet/CRI-O (`rootfs_diff.rs`, `cr_archive.rs`).
//!
//! Unpacking is defensive, because an archive may come from another host:
//! every entry is checked before anything is written ([`scan`]), so a
//! hostile or truncated archive is refused whole, not half-applied. An entry
//! must have a relative path of plain components (no `..`, no absolute
//! path), be a directory, regular file, symlink, hard link (to another entry
//! path of the same kind) or FIFO (never a device node), and have all its
//! data. While unpacking, no path is written through a symlink: each parent
//! component inside the destination must be a real directory.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use tar::{Archive, Builder, EntryType, Header, HeaderMode};

/// A tar builder over `w` that archives symlinks as symlinks and records
/// owners, modes and mtimes. Sparse files are written out whole: plain
/// entries that every reader understands.
pub fn builder<W: io::Write>(w: W) -> Builder<W> {
    let mut b = Builder::new(w);
    b.mode(HeaderMode::Complete);
    b.follow_symlinks(false);
    b.sparse(false);
    b
}

/// Appends an in-memory file `name` (mode 0600, owned by root).
pub fn append_bytes<W: io::Write>(b: &mut Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(now_secs());
    b.append_data(&mut h, name, data)
}

/// Appends a directory entry `name` (mode 0700) with no contents.
pub fn append_empty_dir<W: io::Write>(b: &mut Builder<W>, name: &str) -> io::Result<()> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o700);
    h.set_mtime(now_secs());
    b.append_data(&mut h, name, io::empty())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Archives everything under `src` (not `src` itself) into the new file
/// `dst`, names relative to `src`.
pub fn pack_dir(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .with_context(|| format!("create {}", dst.display()))?;
    let mut b = builder(io::BufWriter::new(file));
    for entry in sorted_entries(src)? {
        let name = entry.file_name();
        b.append_dir_all(&name, src.join(&name))
            .or_else(|e| {
                // append_dir_all wants a directory; anything else is one entry.
                if src.join(&name).symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                    b.append_path_with_name(src.join(&name), &name)
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("archive {}", src.join(&name).display()))?;
    }
    let w = b.into_inner().with_context(|| format!("write {}", dst.display()))?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("write {}", dst.display()))
}

/// The entries of directory `dir`, sorted by name.
pub fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("read {}", dir.display()))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// `path` as plain components (a leading `./` allowed and dropped); `None`
/// for an absolute path, `..`, or nothing at all.
pub fn plain_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// What [`scan`] learnt about an archive.
#[derive(Debug, Default)]
pub struct Scanned {
    pub entries: usize,
    pub bytes: u64,
}

/// Reads the whole archive at `file` and checks every entry (see the module
/// doc) without writing anything.
pub fn scan(file: &Path) -> anyhow::Result<Scanned> {
    let f = File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut ar = Archive::new(io::BufReader::new(f));
    let mut out = Scanned::default();
    let mut symlinks = std::collections::HashSet::new();
    let what = || format!("archive {}", file.display());
    for entry in ar.entries().with_context(what)? {
        let mut entry = entry.with_context(what)?;
        let path = entry.path().with_context(what)?.into_owned();
        check_entry(&entry, &path).with_context(what)?;
        if let Some(rel) = plain_relative(&path) {
            if let Some(link) = rel.ancestors().skip(1).find(|a| symlinks.contains(*a)) {
                bail!("{}: refusing entry {}: it goes through the symlink {}", what(), path.display(), link.display());
            }
            if entry.header().entry_type() == EntryType::Symlink {
                symlinks.insert(rel);
            }
        }
        out.bytes += read_all_of(&mut entry, &path).with_context(what)?;
        out.entries += 1;
    }
    Ok(out)
}

/// Reads an entry's data to the end; an archive cut short is an error (the
/// `tar` crate itself just stops early).
fn read_all_of<R: Read>(entry: &mut tar::Entry<R>, path: &Path) -> anyhow::Result<u64> {
    let want = entry.size();
    let got = io::copy(entry, &mut io::sink())?;
    if got != want {
        bail!("{}: truncated ({got} of {want} bytes)", path.display());
    }
    Ok(got)
}

fn check_entry<R: Read>(entry: &tar::Entry<R>, path: &Path) -> anyhow::Result<()> {
    let kind = entry.header().entry_type();
    let Some(_) = plain_relative(path) else {
        // The archive root itself ("./") is allowed and skipped.
        if kind.is_dir() && path.components().all(|c| c == Component::CurDir) {
            return Ok(());
        }
        bail!("refusing entry {}: not a relative path inside the archive", path.display());
    };
    match kind {
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::GNUSparse
        | EntryType::Directory
        | EntryType::Symlink
        | EntryType::Fifo => {}
        // PAX/GNU long-name records are consumed by the tar crate itself.
        EntryType::Link => {
            let target = entry.link_name()?.unwrap_or_default();
            if plain_relative(&target).is_none() {
                bail!("refusing hard link {} -> {}: target outside the archive", path.display(), target.display());
            }
        }
        EntryType::Char | EntryType::Block => {
            bail!("refusing entry {}: device nodes are not unpacked", path.display())
        }
        other => bail!("refusing entry {}: unsupported type {other:?}", path.display()),
    }
    Ok(())
}

/// Checks that the parents of `rel` under `root` are real directories (not
/// symlinks), so that nothing is written or removed outside `root`.
pub fn check_parents(root: &Path, rel: &Path) -> anyhow::Result<()> {
    parents(root, rel, false)
}

/// As [`check_parents`], making missing parents (0755).
fn safe_parents(root: &Path, rel: &Path) -> anyhow::Result<()> {
    parents(root, rel, true)
}

fn parents(root: &Path, rel: &Path, create: bool) -> anyhow::Result<()> {
    let mut at = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(()) };
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{}: not a directory (refusing to write through it)", at.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o755).create(&at).with_context(|| format!("create {}", at.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("stat {}", at.display())),
        }
    }
    Ok(())
}

/// Unpacks the archive at `file` into the existing directory `dst`, keeping
/// modes, owners and mtimes, replacing what is there. The archive is
/// [`scan`]ned first: a bad one is refused before anything is written.
pub fn unpack(file: &Path, dst: &Path) -> anyhow::Result<Scanned> {
    scan(file)?;
    extract(file, dst)
}

/// [`unpack`] of an archive that [`scan`] has already accepted.
pub fn extract(file: &Path, dst: &Path) -> anyhow::Result<Scanned> {
    let mut scanned = Scanned::default();
    let f = File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut ar = Archive::new(io::BufReader::new(f));
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    let what = || format!("unpack {} into {}", file.display(), dst.display());
    for entry in ar.entries().with_context(what)? {
        let mut entry = entry.with_context(what)?;
        let path = entry.path().with_context(what)?.into_owned();
        let Some(rel) = plain_relative(&path) else { continue };
        safe_parents(dst, &rel).with_context(what)?;
        let target = dst.join(&rel);
        let kind = entry.header().entry_type();
        // A directory where a file was (or the reverse) replaces it.
        if let Ok(old) = fs::symlink_metadata(&target) {
            if old.is_dir() != kind.is_dir() {
                if old.is_dir() {
                    fs::remove_dir_all(&target)
                } else {
                    fs::remove_file(&target)
                }
                .with_context(|| format!("replace {}", target.display()))?;
            }
        }
        if kind == EntryType::Link {
            let link = entry.link_name().with_context(what)?.unwrap_or_default();
            let src = dst.join(plain_relative(&link).context("hard link target")?);
            let _ = fs::remove_file(&target);
            fs::hard_link(&src, &target)
                .with_context(|| format!("link {} to {}", target.display(), src.display()))?;
            scanned.entries += 1;
            continue;
        }
        scanned.bytes += entry.size();
        entry
            .unpack(&target)
            .with_context(|| format!("unpack {}", target.display()))?;
        scanned.entries += 1;
    }
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stasis-archive-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn raw_tar(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // set_path refuses "..": write the name bytes directly.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn pack_and_unpack_round_trip() {
        let d = tmp("rt");
        let (src, dst) = (d.join("src"), d.join("dst"));
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f"), "data").unwrap();
        std::os::unix::fs::symlink("b/f", src.join("a/l")).unwrap();
        fs::write(src.join("top"), "x").unwrap();
        fs::create_dir(&dst).unwrap();
        pack_dir(&src, &d.join("t.tar")).unwrap();
        let s = unpack(&d.join("t.tar"), &dst).unwrap();
        assert_eq!(s.entries, 5);
        assert_eq!(fs::read_to_string(dst.join("a/b/f")).unwrap(), "data");
        assert_eq!(fs::read_link(dst.join("a/l")).unwrap(), Path::new("b/f"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn hostile_entries_are_refused_before_writing() {
        let d = tmp("hostile");
        let dst = d.join("dst");
        fs::create_dir(&dst).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (raw_tar(&[("ok", EntryType::Regular, b"1", None), ("../evil", EntryType::Regular, b"x", None)]), "not a relative path"),
            (raw_tar(&[("/etc/evil", EntryType::Regular, b"x", None)]), "not a relative path"),
            (raw_tar(&[("dev", EntryType::Char, b"", None)]), "device nodes"),
            (raw_tar(&[("h", EntryType::Link, b"", Some("../../etc/passwd"))]), "outside the archive"),
        ];
        for (i, (bytes, want)) in cases.into_iter().enumerate() {
            let f = d.join(format!("{i}.tar"));
            fs::write(&f, bytes).unwrap();
            let err = format!("{:#}", unpack(&f, &dst).unwrap_err());
            assert!(err.contains(want), "case {i}: {err}");
            assert_eq!(fs::read_dir(&dst).unwrap().count(), 0, "case {i} wrote something");
        }
        // Cut short inside an entry's data.
        let good = raw_tar(&[("f", EntryType::Regular, &[7u8; 3000], None)]);
        fs::write(d.join("cut.tar"), &good[..1500]).unwrap();
        let err = format!("{:#}", unpack(&d.join("cut.tar"), &dst).unwrap_err());
        assert!(err.contains("truncated") || err.contains("failed to read"), "{err}");
        assert_eq!(fs::read_dir(&dst).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn no_writing_through_a_symlink() {
        let d = tmp("symlink");
        let (dst, outside) = (d.join("dst"), d.join("outside"));
        fs::create_dir_all(&dst).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // The archive makes "l" a symlink to outside, then writes "l/f".
        let bytes = raw_tar(&[
            ("l", EntryType::Symlink, b"", Some(outside.to_str().unwrap())),
            ("l/f", EntryType::Regular, b"x", None),
        ]);
        fs::write(d.join("s.tar"), bytes).unwrap();
        let err = format!("{:#}", unpack(&d.join("s.tar"), &dst).unwrap_err());
        assert!(err.contains("goes through the symlink l"), "{err}");
        assert!(!outside.join("f").exists() && !dst.join("l").exists());
        // A symlink already in the destination is not written through either.
        std::os::unix::fs::symlink(&outside, dst.join("l")).unwrap();
        let bytes = raw_tar(&[("l/f", EntryType::Regular, b"x", None)]);
        fs::write(d.join("s2.tar"), bytes).unwrap();
        let err = format!("{:#}", unpack(&d.join("s2.tar"), &dst).unwrap_err());
        assert!(err.contains("not a directory"), "{err}");
        assert!(!outside.join("f").exists());
        let _ = fs::remove_dir_all(&d);
    }
}
