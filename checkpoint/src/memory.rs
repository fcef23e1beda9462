//! Memory: dump of every VMA's layout and populated pages, and the copy
//! engine that moves page data into `pages.img`.
//!
//! Dump selects pages with `PAGEMAP_SCAN` (present or swapped, not the zero
//! page, not page-cache pages of a file: CRIU's selection), then copies them
//! on several threads with `process_vm_readv` into a small per-thread
//! buffer that is hashed and written with `pwrite` while it is in cache (see
//! [`Copier::run`] for why not through a mapping of the image). VMAs
//! without read permission are read through `/proc/pid/mem`, which may read
//! them.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use crate::error::{Context, Error, Result};
use crate::image::PagesWriter;
use crate::model::{Blob, PageRun, Vma, VmaKind};
use crate::proc::MapEntry;
use crate::shmem::ShmemTable;
use crate::sys::{self, Mmap, ScanQuery};

/// Largest page run stored as one blob (keeps copy/hash work divisible).
const MAX_RUN: u64 = 64 << 20;

/// Where the bytes of one blob come from.
pub enum Source {
    /// Memory of a (stopped) process.
    Remote { pid: i32, addr: u64, readable: bool },
    /// A mapping held by the engine (shared memory objects).
    Local { map: std::sync::Arc<Mmap>, offset: usize },
    /// Bytes already in memory (pipe contents, small files).
    Bytes(Vec<u8>),
}

pub struct CopyJob {
    pub src: Source,
    pub off: u64,
    pub len: u64,
}

/// Collects copy jobs while the image metadata is built; `run` performs them.
#[derive(Default)]
pub struct Copier {
    pub jobs: Vec<CopyJob>,
    /// A process that exits while its memory is copied leaves its blobs with
    /// checksum 0 instead of failing the copy (pre-copy rounds, where the
    /// tree runs; the caller drops those copies).
    pub tolerate_exit: bool,
    /// Blobs (image depth, offset, length) already written whose checksum
    /// must be computed (pieces of earlier copies); depth 0 is this image.
    pub rehash: Vec<(u32, u64, u64)>,
}

impl Copier {
    /// Reserves space for `len` bytes from `src`; returns the blob (checksum filled in by `run`).
    pub fn add(&mut self, w: &PagesWriter, src: Source, len: u64) -> Blob {
        let off = w.reserve(len);
        self.jobs.push(CopyJob { src, off, len });
        Blob { off, len, xxh3: 0 }
    }

    /// Copies every job into the pages file on `threads` workers; returns
    /// the checksum of each blob by offset. Remote memory is read with
    /// `process_vm_readv` into a reused per-worker buffer and written with
    /// `pwrite`: measured here, that beats writing through a fresh shared
    /// mapping of the image (one page fault per page) by 2-10x.
    pub fn run(&mut self, w: &PagesWriter, threads: usize) -> Result<HashMap<u64, u64>> {
        let total = w.reserved_end();
        let file: &File = w.file();
        file.set_len(total).ctx(|| "size pages.img".into())?;
        let all = std::mem::take(&mut self.jobs);
        if all.is_empty() {
            return Ok(HashMap::new());
        }
        let mut jobs: Vec<&CopyJob> = all.iter().collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.len));
        let threads = threads.clamp(1, 8);
        let mut buckets: Vec<(u64, Vec<&CopyJob>)> = (0..threads).map(|_| (0, Vec::new())).collect();
        for j in jobs {
            let b = buckets.iter_mut().min_by_key(|b| b.0).expect("at least one bucket");
            b.0 += j.len;
            b.1.push(j);
        }
        let tolerate = self.tolerate_exit;
        let results: Vec<Result<Vec<(u64, u64)>>> = std::thread::scope(|s| {
            let hs: Vec<_> = buckets
                .into_iter()
                .map(|(_, js)| {
                    s.spawn(move || {
                        let mut buf = vec![0u8; BUF_LEN];
                        js.into_iter()
                            .map(|j| match copy_one(file, &mut buf, j) {
                                Err(Error::Io { cause, .. }) if tolerate && cause.raw_os_error() == Some(libc::ESRCH) => Ok((j.off, 0)),
                                r => r,
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Restore("copy worker panicked".into())))).collect()
        });
        let mut sums = HashMap::new();
        for r in results {
            sums.extend(r?);
        }
        Ok(sums)
    }
}

/// Copy buffer per worker: small enough to stay in L2 while it is read,
/// hashed and written, and to keep pages.img's inode lock (each `pwrite`
/// takes it) for short spells. Measured side by side on memhog2048: 8 MiB
/// 5.5-7.4 s of copy under load, 256 KiB 1.1-2.0 s, 64 KiB and 1 MiB worse.
const BUF_LEN: usize = 256 << 10;

impl Copier {
    /// Checksums of the blobs listed in `rehash`, by (depth, offset), read
    /// back from this image's file or from the parents' (`parents[0]` is depth 1).
    pub fn rehash_sums(&mut self, w: &PagesWriter, parents: &[crate::image::PagesReader]) -> Result<HashMap<(u32, u64), u64>> {
        let mut out = HashMap::new();
        let mut buf = vec![0u8; BUF_LEN];
        for (depth, off, len) in std::mem::take(&mut self.rehash) {
            if depth > 0 {
                let reader = parents.get(depth as usize - 1).ok_or_else(|| Error::Restore(format!("no parent image at depth {depth}")))?;
                let b = reader.get_unchecked_sum(&Blob { off, len, xxh3: 0 })?;
                out.insert((depth, off), xxhash_rust::xxh3::xxh3_64(b));
                continue;
            }
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            let mut done = 0;
            while done < len {
                let n = (len - done).min(BUF_LEN as u64) as usize;
                w.file().read_exact_at(&mut buf[..n], off + done).ctx(|| "read back pages.img".into())?;
                h.update(&buf[..n]);
                done += n as u64;
            }
            out.insert((0, off), h.digest());
        }
        Ok(out)
    }
}

fn copy_one(file: &File, buf: &mut [u8], j: &CopyJob) -> Result<(u64, u64)> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut put = |at: u64, b: &[u8]| -> Result<()> {
        h.update(b);
        file.write_all_at(b, at).ctx(|| "write pages.img".into())
    };
    match &j.src {
        Source::Remote { pid, addr, readable } => {
            let mem = if *readable {
                None
            } else {
                Some(File::open(format!("/proc/{pid}/mem")).ctx(|| format!("open memory of task {pid}"))?)
            };
            let mut done = 0u64;
            while done < j.len {
                let n = (j.len - done).min(buf.len() as u64) as usize;
                let chunk = &mut buf[..n];
                let at = addr + done;
                let what = || format!("read memory of task {pid} at {at:#x}");
                match &mem {
                    None => {
                        if sys::vm_read(*pid, at, chunk).ctx(what)? != n {
                            return Err(Error::Io { context: what(), cause: std::io::Error::other("short read") });
                        }
                    }
                    Some(m) => m.read_exact_at(chunk, at).ctx(what)?,
                }
                put(j.off + done, chunk)?;
                done += n as u64;
            }
        }
        Source::Local { map: src, offset } => {
            let b = src.bytes().get(*offset..*offset + j.len as usize).ok_or_else(|| Error::Restore("local source range".into()))?;
            put(j.off, b)?;
        }
        Source::Bytes(b) => {
            let mut v = b.clone();
            v.resize(j.len as usize, 0);
            put(j.off, &v)?;
        }
    }
    Ok((j.off, h.digest()))
}

/// Splits `[start, end)` into runs of at most [`MAX_RUN`] bytes.
pub fn chunks(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    (start..end).step_by(MAX_RUN as usize).map(move |s| (s, (s + MAX_RUN).min(end)))
}

/// Dumps the VMAs of stopped task `pid` (host pid); `vpid` names it in errors.
pub fn dump_vmas(
    pid: i32,
    vpid: i32,
    maps: &[MapEntry],
    root_prefix: &str,
    shm: &mut ShmemTable,
    w: &PagesWriter,
    copier: &mut Copier,
    pre: Option<&crate::precopy::PreCopy>,
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
            sys::pagemap_scan(pagemap.as_fd(), m.start, m.end, ScanQuery::DUMPABLE, &mut ranges)
                .ctx(|| format!("scan pages of task {vpid} at {:#x}", m.start))?;
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
