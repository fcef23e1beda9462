//! Page data into a morphing task: every dumped run, checksum-verified as
//! it is copied, on two threads.
//!
//! Private anonymous writable memory (nearly all of a process's pages) goes
//! in with `UFFDIO_COPY` through a userfaultfd created inside the task
//! ([`Filler`]): each page is allocated and copied once, where
//! `process_vm_writev` would fault it in zeroed first. Other memory goes in
//! with `process_vm_writev`, or through `/proc/pid/mem` where the mapping is
//! read-only.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use crate::error::{Context, Error, Result};
use crate::model::{PageRun, Vma, VmaKind};
use crate::sys::inject::Remote;
use crate::sys::{self, uffd};

use super::morph::Morph;

/// Runs are verified and copied in pieces of this size: each is hashed and
/// copied while it is still in cache.
const FILL_PIECE: usize = 1 << 20;
/// Below this many bytes of eligible memory a task is filled without a
/// userfaultfd (creating one costs an injected call).
const UFFD_MIN_BYTES: u64 = 4 << 20;

/// How one run's bytes get into the task.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dest {
    Uffd,
    VmWrite,
    Mem,
}

/// A userfaultfd inside the task being morphed, with the VMAs registered
/// for `UFFDIO_COPY`.
pub struct Filler {
    uffd: OwnedFd,
    /// Its fd number inside the task: closed with the helper fds.
    pub in_task: u64,
    ranges: Vec<(u64, u64)>,
}

/// Whether page faults in `v` would allocate transparent huge pages (which
/// `UFFDIO_COPY` never installs): with THP "always" unless the VMA opted
/// out, with "madvise" if it opted in.
fn faults_huge(v: &Vma) -> bool {
    static MODE: OnceLock<String> = OnceLock::new();
    let mode = MODE.get_or_init(|| std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default());
    if mode.contains("[always]") {
        !v.madvise.contains(&libc::MADV_NOHUGEPAGE)
    } else if mode.contains("[madvise]") {
        v.madvise.contains(&libc::MADV_HUGEPAGE)
    } else {
        false
    }
}

/// Memory `UFFDIO_COPY` can fill: private anonymous, mapped writable, with pages.
fn eligible(v: &Vma) -> bool {
    v.kind == VmaKind::Anon
        && v.flags & libc::MAP_SHARED == 0
        && v.map_prot() & libc::PROT_WRITE != 0
        && !v.pages.is_empty()
        && !faults_huge(v)
}

impl Filler {
    /// Creates a userfaultfd in stopped task `pid` (through `r`) and
    /// registers its eligible VMAs. `None` when there is too little to gain
    /// or the kernel refuses (the fill then uses `process_vm_writev`).
    pub fn open(r: &mut Remote, pid: i32, vmas: &[Vma]) -> Option<Filler> {
        let bytes: u64 = vmas.iter().filter(|v| eligible(v)).flat_map(|v| &v.pages).map(|p| p.data.len).sum();
        if bytes < UFFD_MIN_BYTES {
            return None;
        }
        let in_task = r.call(libc::SYS_userfaultfd, &[uffd::CREATE_FLAGS]).ok()?;
        let uffd = match sys::take_fd(pid, in_task as i32) {
            Ok(fd) => fd,
            Err(_) => {
                // Not left behind in the task: closing it there is all it takes.
                let _ = r.call(libc::SYS_close, &[in_task]);
                return None;
            }
        };
        let mut f = Filler { uffd, in_task, ranges: Vec::new() };
        if uffd::enable_fill(f.uffd.as_fd()).is_err() {
            return Some(f); // nothing registered: everything by process_vm_writev
        }
        for v in vmas.iter().filter(|v| eligible(v)) {
            if uffd::register_missing(f.uffd.as_fd(), v.start, v.end).is_ok() {
                f.ranges.push((v.start, v.end));
            }
        }
        Some(f)
    }

    /// Ends the registrations (the task's own fd is closed with the helper fds).
    pub fn close(self) -> std::io::Result<()> {
        for &(s, e) in &self.ranges {
            uffd::unregister(self.uffd.as_fd(), s, e)?;
        }
        Ok(())
    }
}

impl Morph<'_> {
    /// Writes every dumped page into the task, on two threads. Each run is
    /// checksum-verified piece by piece as it is copied (a mismatch fails
    /// the restore, which kills the task), so every piece is read from the
    /// image once and copied while still in cache. A piece goes in with
    /// `UFFDIO_COPY` where `filler` registered its VMA, else with
    /// `process_vm_writev`, or through `/proc/pid/mem`, which may write into
    /// read-only private mappings.
    pub(super) fn fill(&self, pid: i32, mem: &File, vmas: &[Vma], filler: Option<&Filler>) -> Result<()> {
        let mut runs: Vec<(&PageRun, Dest)> = Vec::new();
        for v in vmas {
            let dest = match filler {
                Some(f) if f.ranges.contains(&(v.start, v.end)) => Dest::Uffd,
                _ if v.map_prot() & libc::PROT_WRITE != 0 => Dest::VmWrite,
                _ => Dest::Mem,
            };
            runs.extend(v.pages.iter().map(|r| (r, dest)));
        }
        let mut halves = crate::copier::spread(runs, 2, |(r, _)| r.data.len).into_iter();
        let ((na, a), (nb, b)) = (halves.next().expect("two halves"), halves.next().expect("two halves"));
        let work = |list: Vec<(&PageRun, Dest)>| -> Result<()> {
            for (run, dest) in list {
                let reader = match run.parent {
                    0 => self.pages,
                    d => self.parents.get(d as usize - 1).ok_or_else(|| {
                        Error::Restore(format!("memory at {:#x} is in parent image {d}, which is missing", run.addr))
                    })?,
                };
                let bytes = reader.get_unchecked_sum(&run.data)?;
                sys::populate_read(bytes);
                let mut h = crate::checksum::Stream::new();
                for (k, piece) in bytes.chunks(FILL_PIECE).enumerate() {
                    h.update(piece);
                    let at = run.addr + (k * FILL_PIECE) as u64;
                    let r = match (dest, filler) {
                        (Dest::Uffd, Some(f)) => uffd::copy(f.uffd.as_fd(), at, piece),
                        (Dest::Mem, _) => mem.write_all_at(piece, at),
                        _ => sys::vm_write(pid, at, piece),
                    };
                    r.ctx(|| format!("fill memory at {at:#x}"))?;
                }
                if h.digest() != run.data.xxh3 {
                    return Err(Error::Restore(format!("pages.img: checksum mismatch for memory at {:#x} (image corrupt)", run.addr)));
                }
                if dest == Dest::Uffd {
                    self.uffd_pages.fetch_add(run.npages, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(())
        };
        if na + nb < 4 << 20 {
            // Not worth two threads.
            return work(a).and(work(b));
        }
        std::thread::scope(|s| {
            let h = s.spawn(|| work(b));
            let ra = work(a);
            let rb = h.join().unwrap_or_else(|_| Err(Error::Restore("fill worker panicked".into())));
            ra.and(rb)
        })
    }
}
