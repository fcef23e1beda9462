//! Pre-copy for low-downtime checkpoints (`--leave-running`): memory is
//! copied while the tree runs, and only what it writes meanwhile is copied
//! again in the short frozen pass at the end.
//!
//! Writes are tracked without soft-dirty (absent on this kernel) by
//! userfaultfd write-protection in asynchronous mode (engine note §4.5): a
//! userfaultfd is created inside each process by one injected syscall (it
//! binds to the caller's mm), taken with `pidfd_getfd` and closed in the
//! process again, so the process keeps no trace. `PAGEMAP_SCAN` with
//! `PM_SCAN_WP_MATCHING` then protects and lists every populated page in
//! one atomic walk; a later write only clears a page's protection, which a
//! second scan reports as `PAGE_IS_WRITTEN`. VMAs that appear, move or
//! cannot be tracked meanwhile are not `PAGE_IS_WPALLOWED` and are copied
//! in full at the end. Closing our uffd drops all tracking.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Context, Result};
use crate::freezer::Freezer;
use crate::image::PagesWriter;
use crate::memory::{chunks, Copier, Source};
use crate::model::PageRun;
use crate::proc::{self, MapEntry};
use crate::seize::Seized;
use crate::sys::inject::{find_syscall_insn, Remote};
use crate::sys::{self, ScanRegion};

const ANY: u64 = sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED;
const SKIP: u64 = sys::PAGE_IS_PFNZERO | sys::PAGE_IS_FILE;

struct Tracked {
    /// Held open for the whole dump: closing it ends the tracking.
    _uffd: OwnedFd,
    /// Pre-copied runs, sorted by address, non-overlapping.
    runs: Vec<PageRun>,
}

/// Memory copied while the tree ran, with the trackers of what it wrote since.
#[derive(Default)]
pub struct PreCopy {
    tasks: HashMap<i32, Tracked>,
    /// `VmFlags` per VMA, read from smaps just before the final freeze.
    flags: HashMap<i32, HashMap<(u64, u64, u64, u64), Vec<String>>>,
}

fn vma_key(m: &MapEntry) -> (u64, u64, u64, u64) {
    (m.start, m.end, m.offset, m.inode)
}

/// VMAs worth tracking: private memory whose pages a dump stores.
pub fn trackable(m: &MapEntry) -> bool {
    !m.shared() && !m.path.starts_with("[v") && !m.has_flag("io") && !m.has_flag("pf")
}

fn open_uffd(pid: i32) -> std::io::Result<OwnedFd> {
    let maps = proc::smaps(pid)?;
    let vdso = maps.iter().find(|m| m.path == "[vdso]").ok_or_else(|| std::io::Error::other("no vdso"))?;
    let mut text = vec![0u8; (vdso.end - vdso.start) as usize];
    sys::vm_read(pid, vdso.start, &mut text)?;
    let ip = find_syscall_insn(vdso.start, &text).ok_or_else(|| std::io::Error::other("no syscall instruction"))?;
    let mut r = Remote::new(pid, pid, ip)?;
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | sys::UFFD_USER_MODE_ONLY;
    let fd = r.call(libc::SYS_userfaultfd, &[flags])?;
    let ours = sys::pidfd_open(pid).and_then(|p| sys::pidfd_getfd(p.as_fd(), fd as i32));
    let closed = r.call(libc::SYS_close, &[fd]);
    r.finish()?;
    let ours = ours?;
    closed?;
    sys::uffd_enable_wp_async(ours.as_fd())?;
    Ok(ours)
}

impl PreCopy {
    /// Seizes the tree just long enough to give each process a tracker,
    /// lets it run, protects and copies its populated pages.
    pub fn run(root: i32, freezer: Option<Freezer>, w: &PagesWriter, threads: usize) -> Result<PreCopy> {
        let seized = Seized::collect(root, freezer)?;
        let mut uffds = Vec::new();
        for t in seized.tasks.iter().filter(|t| !t.zombie) {
            // A process we cannot track is simply copied in full at the end.
            if let Ok(fd) = open_uffd(t.pid) {
                uffds.push((t.pid, fd));
            }
        }
        seized.release();
        let mut pre = PreCopy::default();
        let mut copier = Copier::default();
        for (pid, uffd) in uffds {
            let uffd: OwnedFd = uffd;
            let mut runs = Vec::new();
            let Ok(maps) = proc::smaps(pid) else { continue };
            let pagemap = File::open(format!("/proc/{pid}/pagemap")).ctx(|| format!("open pagemap of {pid}"))?;
            for m in maps.iter().filter(|m| trackable(m)) {
                if sys::uffd_register_wp(uffd.as_fd(), m.start, m.end).is_err() {
                    continue;
                }
                let regions = sys::pagemap_scan_regions(pagemap.as_fd(), m.start, m.end, ANY, ANY | SKIP, sys::PM_SCAN_WP_MATCHING)
                    .ctx(|| format!("protect pages of {pid} at {:#x}", m.start))?;
                for r in regions.iter().filter(|r| r.categories & SKIP == 0) {
                    for (a, b) in chunks(r.start, r.end) {
                        let data = copier.add(w, Source::Remote { pid, addr: a, readable: m.perms[0] == b'r' }, b - a);
                        runs.push(PageRun { addr: a, npages: (b - a) / 4096, data });
                    }
                }
            }
            pre.tasks.insert(pid, Tracked { _uffd: uffd, runs });
        }
        // A page that vanishes while we copy (munmap) fails the copy: then
        // this pre-copy is simply not used.
        let sums = copier.run(w, threads)?;
        for t in pre.tasks.values_mut() {
            for r in &mut t.runs {
                r.data.xxh3 = sums.get(&r.data.off).copied().unwrap_or(0);
            }
            t.runs.sort_by_key(|r| r.addr);
        }
        Ok(pre)
    }

    /// Reads every tracked process's `VmFlags` while it still runs, so the
    /// frozen pass can read the cheap `/proc/pid/maps` instead of smaps.
    pub fn snapshot_flags(&mut self) {
        for &pid in self.tasks.keys() {
            if let Ok(maps) = proc::smaps(pid) {
                self.flags.insert(pid, maps.into_iter().map(|m| (vma_key(&m), m.vmflags)).collect());
            }
        }
    }

    /// The VMAs of stopped task `pid`: from `/proc/pid/maps` with the
    /// snapshotted flags when every VMA is known, else from smaps. (A
    /// madvise between snapshot and freeze that changes no range is missed;
    /// such a hint is then not re-applied on restore.)
    pub fn maps(&self, pid: i32) -> std::io::Result<Vec<MapEntry>> {
        if let Some(flags) = self.flags.get(&pid) {
            let mut maps = proc::maps(pid)?;
            if maps.iter().all(|m| flags.contains_key(&vma_key(m))) {
                for m in &mut maps {
                    m.vmflags = flags[&vma_key(m)].clone();
                }
                return Ok(maps);
            }
        }
        proc::smaps(pid)
    }

    /// The pages of VMA `[start, end)` of stopped task `pid` for the final
    /// image: pre-copied data where the page is still clean, new copy jobs
    /// where it was written (or is untracked). `None`: not tracked.
    pub fn vma_pages(&self, pid: i32, pagemap: &File, m: &MapEntry, w: &PagesWriter, copier: &mut Copier) -> Result<Option<Vec<PageRun>>> {
        let Some(t) = self.tasks.get(&pid) else { return Ok(None) };
        let ret = ANY | SKIP | sys::PAGE_IS_WRITTEN | sys::PAGE_IS_WPALLOWED;
        let regions: Vec<ScanRegion> = sys::pagemap_scan_regions(pagemap.as_fd(), m.start, m.end, ANY, ret, 0)
            .ctx(|| format!("scan written pages of {pid} at {:#x}", m.start))?;
        let mut out = Vec::new();
        for r in regions.iter().filter(|r| r.categories & SKIP == 0) {
            let clean = r.categories & sys::PAGE_IS_WPALLOWED != 0 && r.categories & sys::PAGE_IS_WRITTEN == 0;
            if clean {
                // Reuse the pre-copied bytes of [r.start, r.end).
                let first = t.runs.partition_point(|p| p.addr + p.npages * 4096 <= r.start);
                for p in &t.runs[first..] {
                    let (ps, pe) = (p.addr, p.addr + p.npages * 4096);
                    if ps >= r.end {
                        break;
                    }
                    let (a, b) = (ps.max(r.start), pe.min(r.end));
                    let whole = a == ps && b == pe;
                    let data = crate::model::Blob {
                        off: p.data.off + (a - ps),
                        len: b - a,
                        xxh3: if whole { p.data.xxh3 } else { 0 },
                    };
                    if !whole || p.data.xxh3 == 0 {
                        copier.rehash.push((data.off, data.len));
                    }
                    out.push(PageRun { addr: a, npages: (b - a) / 4096, data });
                }
            } else {
                for (a, b) in chunks(r.start, r.end) {
                    let data = copier.add(w, Source::Remote { pid, addr: a, readable: m.perms[0] == b'r' }, b - a);
                    out.push(PageRun { addr: a, npages: (b - a) / 4096, data });
                }
            }
        }
        out.sort_by_key(|r| r.addr);
        Ok(Some(out))
    }
}
