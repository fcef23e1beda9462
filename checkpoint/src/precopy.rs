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
use crate::copier::{Copier, Source};
use crate::memory::chunks;
use crate::model::{PageRun, PreDumpImage, PreDumpTask};
use crate::proc::{self, MapEntry};
use crate::seize::Seized;
use crate::sys::inject::{find_syscall_insn, Remote};
use crate::sys::{self, ScanRegion};

const ANY: u64 = sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED;
const SKIP: u64 = sys::PAGE_IS_PFNZERO | sys::PAGE_IS_FILE;
/// VMAs at least this large are scanned on two threads.
const SPLIT_SCAN: u64 = 256 << 20;

struct Tracked {
    /// Held open for the whole dump: closing it ends the tracking (unless
    /// the process keeps its own copy, see `in_task_fd`).
    uffd: OwnedFd,
    /// Pid inside the tree's namespace.
    vpid: i32,
    /// Pages whose copy is still valid while unwritten, sorted by address
    /// (`parent` says which image holds them).
    base: Vec<PageRun>,
    /// For pre-dumps: the tracker's fd inside the process, kept there so
    /// tracking outlives this command.
    in_task_fd: Option<i32>,
}

/// Memory copied while the tree ran, with the trackers of what it wrote since.
#[derive(Default)]
pub struct PreCopy {
    tasks: HashMap<i32, Tracked>,
    /// What the running round took: see [`RoundTimes`].
    pub times: RoundTimes,
    /// `VmFlags` per VMA, read from smaps just before the final freeze.
    flags: HashMap<i32, HashMap<VmaKey, Vec<String>>>,
}

/// Figures of a round that copies while the tree runs, microseconds from
/// its start: the tree is frozen only while trackers are opened.
#[derive(Debug, Default, Clone, Copy)]
pub struct RoundTimes {
    /// The tree runs again (trackers opened; freeze ends).
    pub frozen_us: u64,
    /// Writes are tracked and the pages to copy listed.
    pub tracked_us: u64,
    /// Everything listed is copied.
    pub copied_us: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// A VMA by (start, end, file offset, inode): the same key before and after
/// the final freeze means the same mapping.
type VmaKey = (u64, u64, u64, u64);

fn vma_key(m: &MapEntry) -> VmaKey {
    (m.start, m.end, m.offset, m.inode)
}

/// VMAs worth tracking: private memory whose pages a dump stores.
pub fn trackable(m: &MapEntry) -> bool {
    !m.shared() && !m.path.starts_with("[v") && !m.has_flag("io") && !m.has_flag("pf")
}

/// Lowest fd number a pre-dump tracker is moved to inside the process, out
/// of the way of the application's own fds.
const TRACKER_FD_MIN: u64 = 900;

/// Creates a write-protect tracker inside stopped process `pid`; returns our
/// copy and, with `keep`, the fd number the process keeps it at.
fn open_uffd(pid: i32, keep: bool) -> std::io::Result<(OwnedFd, Option<i32>)> {
    let maps = proc::maps(pid)?;
    let vdso = maps.iter().find(|m| m.path == "[vdso]").ok_or_else(|| std::io::Error::other("no vdso"))?;
    let mut text = vec![0u8; (vdso.end - vdso.start) as usize];
    sys::vm_read(pid, vdso.start, &mut text)?;
    let ip = find_syscall_insn(vdso.start, &text).ok_or_else(|| std::io::Error::other("no syscall instruction"))?;
    let mut r = Remote::new(pid, pid, ip)?;
    let mut fd = r.call(libc::SYS_userfaultfd, &[sys::uffd::CREATE_FLAGS])?;
    let mut kept = None;
    if keep {
        let high = r.call(libc::SYS_fcntl, &[fd, libc::F_DUPFD_CLOEXEC as u64, TRACKER_FD_MIN])?;
        r.call(libc::SYS_close, &[fd])?;
        fd = high;
        kept = Some(high as i32);
    }
    let ours = sys::take_fd(pid, fd as i32);
    let closed = if keep { Ok(0) } else { r.call(libc::SYS_close, &[fd]) };
    r.finish()?;
    let ours = ours?;
    closed?;
    sys::uffd::enable_wp_async(ours.as_fd())?;
    Ok((ours, kept))
}

/// Takes the tracker a pre-dump left at `fd` in process `pid`.
fn adopt_uffd(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))?;
    if link.to_string_lossy() != "anon_inode:[userfaultfd]" {
        return Err(std::io::Error::other(format!("fd {fd} of {pid} is no longer the pre-dump's tracker")));
    }
    sys::pidfd_open(pid).and_then(|p| sys::pidfd_getfd(p.as_fd(), fd))
}

/// Host pid of every process of the tree rooted at `root`, by its pid in
/// the tree's namespace.
fn ns_pids(root: i32) -> std::io::Result<HashMap<i32, i32>> {
    let idx = proc::Status::read(&format!("/proc/{root}/status"))?.nspid.len() - 1;
    let mut out = HashMap::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let st = proc::Status::read(&format!("/proc/{pid}/status"))?;
        out.insert(st.nspid.get(idx).copied().unwrap_or(0), pid);
        queue.extend(proc::children(pid)?);
    }
    Ok(out)
}

impl PreCopy {
    /// Leave-running pre-copy: trackers hidden from the processes.
    pub fn run(root: i32, freezer: Option<Freezer>, w: &PagesWriter, threads: usize) -> Result<PreCopy> {
        Self::round(root, freezer, w, threads, None, false, &[])
    }

    /// A pre-dump round: trackers stay in the processes for the next dump;
    /// pages unwritten since `parent` are referenced there, not copied.
    pub fn pre_dump(
        root: i32,
        freezer: Option<Freezer>,
        w: &PagesWriter,
        threads: usize,
        parent: Option<&PreDumpImage>,
        parents: &[crate::image::PagesReader],
    ) -> Result<(PreCopy, PreDumpImage)> {
        let pre = Self::round(root, freezer, w, threads, parent, true, parents)?;
        let mut img = PreDumpImage::default();
        for t in pre.tasks.values() {
            if let Some(fd) = t.in_task_fd {
                img.tasks.push(PreDumpTask { pid: t.vpid, uffd_fd: fd, runs: t.base.clone() });
            }
        }
        img.tasks.sort_by_key(|t| t.pid);
        Ok((pre, img))
    }

    /// For the final dump after pre-dumps: the trackers left in the
    /// processes, with the parent's pages as the base.
    pub fn adopt(root: i32, parent: &PreDumpImage) -> Result<PreCopy> {
        let pids = ns_pids(root).ctx(|| "list the tree".into())?;
        let mut pre = PreCopy::default();
        for t in &parent.tasks {
            let Some(&pid) = pids.get(&t.pid) else { continue };
            // A tracker that is gone (exec, fd closed) means a full copy.
            let Ok(uffd) = adopt_uffd(pid, t.uffd_fd) else { continue };
            let base = t.runs.iter().map(|r| PageRun { parent: r.parent + 1, ..*r }).collect();
            pre.tasks.insert(pid, Tracked { uffd, vpid: t.pid, base, in_task_fd: Some(t.uffd_fd) });
        }
        Ok(pre)
    }

    #[allow(clippy::too_many_arguments)]
    fn round(
        root: i32,
        freezer: Option<Freezer>,
        w: &PagesWriter,
        threads: usize,
        parent: Option<&PreDumpImage>,
        keep: bool,
        parents: &[crate::image::PagesReader],
    ) -> Result<PreCopy> {
        let t0 = std::time::Instant::now();
        let us = || t0.elapsed().as_micros() as u64;
        let seized = Seized::collect(root, freezer)?;
        let idx = seized.tasks[0].status.nspid.len() - 1;
        let mut pre = PreCopy::default();
        for t in seized.tasks.iter().filter(|t| !t.zombie) {
            let vpid = t.status.nspid.get(idx).copied().unwrap_or(0);
            let from_parent = parent.and_then(|p| p.tasks.iter().find(|x| x.pid == vpid));
            let tracked = match from_parent {
                Some(pt) => adopt_uffd(t.pid, pt.uffd_fd).map(|u| Tracked {
                    uffd: u,
                    vpid,
                    base: pt.runs.iter().map(|r| PageRun { parent: r.parent + 1, ..*r }).collect(),
                    in_task_fd: Some(pt.uffd_fd),
                }),
                None => open_uffd(t.pid, keep).map(|(u, fd)| Tracked { uffd: u, vpid, base: Vec::new(), in_task_fd: fd }),
            };
            // A process we cannot track is simply copied in full later.
            if let Ok(tr) = tracked {
                pre.tasks.insert(t.pid, tr);
            }
        }
        seized.release();
        pre.times.frozen_us = us();
        // The tree runs again: a process may exit at any point from here on;
        // it is then simply not tracked (the final dump copies what exists).
        let mut copier = Copier { tolerate_exit: true, ..Default::default() };
        let mut fresh: HashMap<i32, Vec<PageRun>> = HashMap::new();
        let mut gone = Vec::new();
        for (&pid, t) in &pre.tasks {
            let scanned = (|| -> Result<Vec<PageRun>> {
                let maps = proc::maps(pid).ctx(|| format!("read mappings of {pid}"))?;
                let pagemap = File::open(format!("/proc/{pid}/pagemap")).ctx(|| format!("open pagemap of {pid}"))?;
                let mut runs = Vec::new();
                for m in maps.iter().filter(|m| trackable(m)) {
                    if sys::uffd::register_wp(t.uffd.as_fd(), m.start, m.end).is_err() {
                        continue;
                    }
                    runs.extend(scan_vma(pid, t, &pagemap, m, true, w, &mut copier)?);
                }
                Ok(runs)
            })();
            match scanned {
                Ok(runs) => {
                    fresh.insert(pid, runs);
                }
                Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => gone.push(pid),
                Err(e) => return Err(e),
            }
        }
        for pid in gone {
            pre.tasks.remove(&pid);
        }
        pre.times.tracked_us = us();
        pre.times.bytes = copier.jobs.iter().map(|j| j.len).sum();
        let sums = copier.run(w, threads)?;
        let resums = copier.rehash_sums(w, parents)?;
        pre.times.copied_us = us();
        for (pid, mut runs) in fresh {
            for r in runs.iter_mut() {
                if r.parent == 0 {
                    if let Some(s) = sums.get(&r.data.off) {
                        r.data.xxh3 = *s;
                    }
                }
                if r.data.xxh3 == 0 {
                    r.data.xxh3 = resums.get(&(r.parent, r.data.off)).copied().unwrap_or(0);
                }
            }
            runs.sort_by_key(|r| r.addr);
            if runs.iter().any(|r| r.data.xxh3 == 0) {
                // It exited while we copied: not tracked, nothing kept.
                pre.tasks.remove(&pid);
            } else if let Some(t) = pre.tasks.get_mut(&pid) {
                t.base = runs;
            }
        }
        Ok(pre)
    }

    /// The tracker fd the dumped process itself holds (to be closed and
    /// left out of the image), if any.
    pub fn in_task_fd(&self, pid: i32) -> Option<i32> {
        self.tasks.get(&pid).and_then(|t| t.in_task_fd)
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

    /// The pages of VMA `m` of stopped task `pid` for the final image:
    /// kept copies where unwritten, new copy jobs elsewhere. `None`: not tracked.
    pub fn vma_pages(&self, pid: i32, pagemap: &File, m: &MapEntry, w: &PagesWriter, copier: &mut Copier) -> Result<Option<Vec<PageRun>>> {
        let Some(t) = self.tasks.get(&pid) else { return Ok(None) };
        scan_vma(pid, t, pagemap, m, false, w, copier).map(Some)
    }
}

/// One scan of VMA `m`: regions unwritten since the tracker's last
/// protection reuse `t.base`; written (or untracked) ones are copied. With
/// `protect`, the scan also re-protects every page for the next round.
fn scan_vma(pid: i32, t: &Tracked, pagemap: &File, m: &MapEntry, protect: bool, w: &PagesWriter, copier: &mut Copier) -> Result<Vec<PageRun>> {
    let ret = ANY | SKIP | sys::PAGE_IS_WRITTEN | sys::PAGE_IS_WPALLOWED;
    let flags = if protect { sys::PM_SCAN_WP_MATCHING } else { 0 };
    // The page-table walk dominates a frozen pass over a large VMA: split it
    // over two threads (PAGEMAP_SCAN only takes the mm's lock for reading).
    let scan = |a: u64, b: u64| sys::pagemap_scan_regions(pagemap.as_fd(), a, b, ANY, ret, flags);
    let regions: Vec<ScanRegion> = if m.end - m.start >= SPLIT_SCAN {
        let mid = m.start + (((m.end - m.start) / 2) & !0x1f_ffff);
        let (lo, hi) = std::thread::scope(|s| {
            let h = s.spawn(|| scan(mid, m.end));
            (scan(m.start, mid), h.join().unwrap_or_else(|_| Err(std::io::Error::other("scan worker panicked"))))
        });
        let mut v = lo.ctx(|| format!("scan written pages of {pid} at {:#x}", m.start))?;
        v.extend(hi.ctx(|| format!("scan written pages of {pid} at {mid:#x}"))?);
        v
    } else {
        scan(m.start, m.end).ctx(|| format!("scan written pages of {pid} at {:#x}", m.start))?
    };
    let mut out = Vec::new();
    for r in regions.iter().filter(|r| r.categories & SKIP == 0) {
        let clean = r.categories & sys::PAGE_IS_WPALLOWED != 0 && r.categories & sys::PAGE_IS_WRITTEN == 0;
        if clean {
            let first = t.base.partition_point(|p| p.addr + p.npages * 4096 <= r.start);
            for p in &t.base[first..] {
                let (ps, pe) = (p.addr, p.addr + p.npages * 4096);
                if ps >= r.end {
                    break;
                }
                let (a, b) = (ps.max(r.start), pe.min(r.end));
                let whole = a == ps && b == pe;
                let data = crate::model::Blob { off: p.data.off + (a - ps), len: b - a, xxh3: if whole { p.data.xxh3 } else { 0 } };
                if !whole || data.xxh3 == 0 {
                    copier.rehash.push((p.parent, data.off, data.len));
                }
                out.push(PageRun { addr: a, npages: (b - a) / 4096, data, parent: p.parent });
            }
        } else {
            for (a, b) in chunks(r.start, r.end) {
                let data = copier.add(w, Source::Remote { pid, addr: a, readable: m.perms[0] == b'r' }, b - a);
                out.push(PageRun { addr: a, npages: (b - a) / 4096, data, parent: 0 });
            }
        }
    }
    out.sort_by_key(|r| r.addr);
    Ok(out)
}
