//! Memory: dump of every VMA's layout and populated pages.
//!
//! Dump selects pages with `PAGEMAP_SCAN` (present or swapped, not the zero
//! page, not page-cache pages of a file: CRIU's selection) and hands each
//! run to the [`Copier`], which moves the data into `pages.img` once
//! everything has been looked at.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;

use crate::copier::{Copier, Source};
use crate::error::{Context, Error, Result};
use crate::image::PagesWriter;
use crate::model::{PageRun, Vma, VmaKind};
use crate::proc::MapEntry;
use crate::shmem::ShmemTable;
use crate::sys::{self, ScanQuery};

/// Largest page run stored as one blob (keeps copy/hash work divisible).
const MAX_RUN: u64 = 64 << 20;

/// Splits `[start, end)` into runs of at most [`MAX_RUN`] bytes.
pub fn chunks(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    (start..end).step_by(MAX_RUN as usize).map(move |s| (s, (s + MAX_RUN).min(end)))
}

/// Page ranges worth storing of private VMAs, by (start, end), scanned ahead
/// of [`dump_vmas`].
pub type Scans = HashMap<(u64, u64), Vec<(u64, u64)>>;

/// Private memory from which reading smaps and scanning run side by side.
const PARALLEL_SCAN: u64 = 64 << 20;

/// The mappings of stopped task `pid` with their flags, and for a process
/// with much private memory its page ranges too: reading smaps (for the
/// flags) and `PAGEMAP_SCAN` both walk every page table, so they run on two
/// threads (26 + ~25 ms one after the other for 2 GiB). A VMA whose scan
/// fails here is scanned again by [`dump_vmas`], which reports the error.
pub fn maps_and_scans(pid: i32) -> std::io::Result<(Vec<MapEntry>, Option<Scans>)> {
    let plain = crate::proc::maps(pid)?;
    let private: u64 = plain.iter().filter(|m| !m.shared()).map(|m| m.end - m.start).sum();
    if private < PARALLEL_SCAN {
        return Ok((crate::proc::smaps(pid)?, None));
    }
    std::thread::scope(|s| {
        let flags = s.spawn(|| crate::proc::smaps(pid));
        let mut scans = Scans::new();
        if let Ok(pagemap) = File::open(format!("/proc/{pid}/pagemap")) {
            for m in plain.iter().filter(|m| !m.shared() && !m.path.starts_with("[v")) {
                let mut ranges = Vec::new();
                if sys::pagemap_scan(pagemap.as_fd(), m.start, m.end, ScanQuery::DUMPABLE, &mut ranges).is_ok() {
                    scans.insert((m.start, m.end), ranges);
                }
            }
        }
        let maps = flags.join().map_err(|_| std::io::Error::other("smaps reader panicked"))??;
        Ok((maps, Some(scans)))
    })
}

/// Dumps the VMAs of stopped task `pid` (host pid); `vpid` names it in errors.
#[allow(clippy::too_many_arguments)]
pub fn dump_vmas(
    pid: i32,
    vpid: i32,
    maps: &[MapEntry],
    root_prefix: &str,
    shm: &mut ShmemTable,
    w: &PagesWriter,
    copier: &mut Copier,
    pre: Option<&crate::precopy::PreCopy>,
    scans: Option<&Scans>,
) -> Result<Vec<Vma>> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).ctx(|| format!("open pagemap of task {vpid}"))?;
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let kind = match m.path.as_str() {
            "[vsyscall]" => continue,
            "[vvar]" => VmaKind::Vvar,
            "[vvar_vclock]" => VmaKind::VvarVclock,
            "[vdso]" => VmaKind::Vdso,
            _ if m.shared() => shm.vma_kind(pid, vpid, m, root_prefix, w, copier)?,
            "" | "[heap]" | "[stack]" => VmaKind::Anon,
            p if p.starts_with("[anon:") => VmaKind::Anon,
            "/dev/zero" => VmaKind::Anon,
            p if p.starts_with('/') && !p.ends_with(" (deleted)") => {
                VmaKind::File { path: crate::files::strip_root(root_prefix, p, vpid)? }
            }
            p => {
                return Err(Error::Unsupported { pid: vpid, what: format!("private mapping of {p} at {:#x}", m.start) })
            }
        };
        let special = matches!(kind, VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vdso);
        if !special && (m.has_flag("io") || m.has_flag("pf")) {
            return Err(Error::Unsupported { pid: vpid, what: format!("device mapping {} at {:#x}", m.path, m.start) });
        }
        let mut flags = if m.shared() { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
        if m.has_flag("gd") {
            flags |= libc::MAP_GROWSDOWN;
        }
        if m.has_flag("nr") {
            flags |= libc::MAP_NORESERVE;
        }
        let mut vma = Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            flags,
            pgoff: m.offset,
            kind,
            madvise: madvise_of(m),
            accounted: !m.shared() && m.perms[1] != b'w' && m.has_flag("ac"),
            mlock: match (m.has_flag("lo"), m.has_flag("lf")) {
                (false, _) => 0,
                (true, false) => crate::model::MLOCK_ALL,
                (true, true) => crate::model::MLOCK_ON_FAULT,
            },
            pages: Vec::new(),
        };
        let private_data = !m.shared() && matches!(vma.kind, VmaKind::Anon | VmaKind::File { .. });
        if private_data {
            if let Some(p) = pre {
                if let Some(pages) = p.vma_pages(pid, &pagemap, m, w, copier)? {
                    vma.pages = pages;
                    out.push(vma);
                    continue;
                }
            }
            let mut ranges = Vec::new();
            match scans.and_then(|s| s.get(&(m.start, m.end))) {
                Some(r) => ranges.clone_from(r),
                None => sys::pagemap_scan(pagemap.as_fd(), m.start, m.end, ScanQuery::DUMPABLE, &mut ranges)
                    .ctx(|| format!("scan pages of task {vpid} at {:#x}", m.start))?,
            }
            let readable = m.perms[0] == b'r';
            for (s, e) in ranges {
                for (a, b) in chunks(s, e) {
                    let data = copier.add(w, Source::Remote { pid, addr: a, readable }, b - a);
                    vma.pages.push(PageRun { addr: a, npages: (b - a) / 4096, data, parent: 0 });
                }
            }
        }
        out.push(vma);
    }
    Ok(out)
}

fn madvise_of(m: &MapEntry) -> Vec<i32> {
    let mut v = Vec::new();
    for (flag, adv) in [
        ("dd", libc::MADV_DONTDUMP),
        ("dc", libc::MADV_DONTFORK),
        ("hg", libc::MADV_HUGEPAGE),
        ("nh", libc::MADV_NOHUGEPAGE),
        ("wf", libc::MADV_WIPEONFORK),
        ("mg", libc::MADV_MERGEABLE),
    ] {
        if m.has_flag(flag) {
            v.push(adv);
        }
    }
    v
}

/// Fills re-computed checksums (by image depth and offset) into the runs
/// that still lack one.
pub fn fill_resums(vmas: &mut [Vma], sums: &HashMap<(u32, u64), u64>) {
    for v in vmas {
        for r in &mut v.pages {
            if let Some(s) = sums.get(&(r.parent, r.data.off)) {
                if r.data.xxh3 == 0 {
                    r.data.xxh3 = *s;
                }
            }
        }
    }
}

/// Fills checksums computed by the copier into every blob of `vmas`.
pub fn fill_sums(vmas: &mut [Vma], sums: &HashMap<u64, u64>) {
    for v in vmas {
        for r in v.pages.iter_mut().filter(|r| r.parent == 0) {
            if let Some(s) = sums.get(&r.data.off) {
                r.data.xxh3 = *s;
            }
        }
    }
}
