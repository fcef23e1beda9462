//! The copy engine: moves page data into `pages.img` once the dump has
//! looked at everything, and checksums every blob on the way.
//!
//! Remote memory is read with `process_vm_readv` into small buffers that are
//! hashed while still in cache and written with `pwrite`. The tree is held
//! still while this runs, so a failed write (a full disk) only fails the
//! dump: the tree is released untouched.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Context, Error, Result};
use crate::image::PagesWriter;
use crate::model::Blob;
use crate::sys::{self, Mmap};

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

    /// Copies every job into the pages file; returns the checksum of each
    /// blob by offset. The jobs are dealt out to `threads` workers, each of
    /// which reads, hashes and writes its own buffer ([`parallel`]).
    pub fn run(&mut self, w: &PagesWriter, threads: usize) -> Result<HashMap<u64, u64>> {
        let total = w.reserved_end();
        let file: &File = w.file();
        allocate(file, total)?;
        let all = std::mem::take(&mut self.jobs);
        if all.is_empty() {
            return Ok(HashMap::new());
        }
        let jobs: Vec<&CopyJob> = all.iter().collect();
        let bytes: u64 = jobs.iter().map(|j| j.len).sum();
        let threads = if bytes >= PARALLEL_MIN { threads.clamp(1, 8) } else { 1 };
        let mut sums = HashMap::new();
        for r in parallel(file, jobs, threads, self.tolerate_exit) {
            sums.extend(r?);
        }
        Ok(sums)
    }
}

/// Makes `file` at least `len` bytes long with its blocks allocated up
/// front. Writes into allocated (unwritten) blocks skip the filesystem's
/// per-block delayed allocation: 2 GiB of 256 KiB `pwrite`s into a fresh
/// ext4 file took 0.25-0.34 s after `fallocate` against 0.37-0.54 s without
/// (two sets of 8 alternating runs; a few runs over 1 s in both aside). A
/// full disk also fails here, before any copying. tmpfs zeroes what
/// `fallocate` allocates (0.83 s against 0.73 s for the same 2 GiB), and
/// filesystems without `fallocate` have nothing to allocate: both just get
/// the length.
fn allocate(file: &File, len: u64) -> Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
    use std::os::fd::AsRawFd;
    let have = file.metadata().ctx(|| "stat pages.img".into())?.len();
    if len <= have {
        return Ok(());
    }
    let what = || format!("allocate {len} bytes for pages.img");
    if fstatfs(file).ctx(what)?.filesystem_type() == TMPFS_MAGIC {
        return file.set_len(len).ctx(what);
    }
    let (Ok(off), Ok(more)) = (i64::try_from(have), i64::try_from(len - have)) else {
        return Err(nix::errno::Errno::EFBIG).ctx(what);
    };
    match fallocate(file.as_raw_fd(), FallocateFlags::empty(), off, more) {
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => file.set_len(len).ctx(what),
        r => r.ctx(what),
    }
}

/// Below this many bytes one thread copies everything.
const PARALLEL_MIN: u64 = 32 << 20;

/// The copy on `workers` threads, each reading, hashing and writing its
/// share of the jobs through one buffer of its own, which stays in that
/// core's cache from `process_vm_readv` to `pwrite`. Buffered writes to one
/// file take its inode lock, so the writes of the workers take turns; with
/// the blocks allocated up front ([`allocate`]) each write holds the lock
/// briefly. Measured on memhog2048 against a pipeline of one reading and
/// hashing thread and one writing thread, alternating in the same minutes:
/// whole checkpoints 0.56-0.64 s against 0.67-1.54 s (medians 0.62 and
/// 1.27 s over eight each); on tmpfs 0.86-0.95 s against 0.93-1.10 s.
/// Returns one result per worker.
fn parallel(file: &File, jobs: Vec<&CopyJob>, workers: usize, tolerate: bool) -> Vec<Result<Vec<(u64, u64)>>> {
    let mut buckets = spread(jobs, workers, |j| j.len);
    if buckets.len() == 1 {
        let (_, js) = buckets.remove(0);
        return vec![copy_jobs(js, tolerate, &mut Writer { file, buf: None })];
    }
    std::thread::scope(|s| {
        let hs: Vec<_> = buckets
            .into_iter()
            .map(|(_, js)| s.spawn(move || copy_jobs(js, tolerate, &mut Writer { file, buf: None })))
            .collect();
        hs.into_iter().map(join).collect()
    })
}

/// Deals `items` out to `n` workers (at least one), largest first, each to
/// the least loaded so far; returns each worker's total weight and items.
pub(crate) fn spread<T>(mut items: Vec<T>, n: usize, weight: impl Fn(&T) -> u64) -> Vec<(u64, Vec<T>)> {
    items.sort_by_key(|x| std::cmp::Reverse(weight(x)));
    let mut buckets: Vec<(u64, Vec<T>)> = (0..n.max(1)).map(|_| (0, Vec::new())).collect();
    for x in items {
        let b = buckets.iter_mut().min_by_key(|b| b.0).expect("at least one bucket");
        b.0 += weight(&x);
        b.1.push(x);
    }
    buckets
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().unwrap_or_else(|_| Err(Error::Restore("copy worker panicked".into())))
}

/// Copy buffer: small enough to stay in L2 while it is read, hashed and
/// written, and to hold pages.img's inode lock (each `pwrite` takes it)
/// for short spells. Measured side by side on memhog2048: 8 MiB 5.5-7.4 s
/// of copy under load, 256 KiB 1.1-2.0 s, 64 KiB and 1 MiB worse. Again
/// with two workers (whole checkpoints, six alternating runs each):
/// 256 KiB 0.63-1.12 s, 128 KiB 0.67-0.95 s, 1 MiB 0.72-1.72 s.
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
                out.insert((depth, off), crate::checksum::of(b));
                continue;
            }
            let mut h = crate::checksum::Stream::new();
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

/// A worker's output: its buffer, and the file the buffer is written to.
struct Writer<'a> {
    file: &'a File,
    buf: Option<Vec<u8>>,
}

impl Writer<'_> {
    fn buffer(&mut self) -> Vec<u8> {
        self.buf.take().unwrap_or_else(|| vec![0u8; BUF_LEN])
    }
    /// Writes the first `len` bytes of `buf` at `at` and keeps the buffer.
    fn put(&mut self, at: u64, buf: Vec<u8>, len: usize) -> std::io::Result<()> {
        let r = self.file.write_all_at(&buf[..len], at);
        self.buf = Some(buf);
        r
    }
}

/// The length of the piece of a blob written at `at` in `pages.img` with
/// `left` bytes of it to go: at most [`BUF_LEN`], ending on a `BUF_LEN`
/// boundary of the file.
///
/// Blobs start wherever the one before ended (the file's first page is
/// its header), so pieces cut from a blob's start would all straddle those
/// boundaries and fill the page cache with ragged folios. Which memory the
/// next fill of the page cache gets depends on that: measured on the
/// bench's memhog2048 flow (a leave-running checkpoint, its image
/// deleted, then the timed checkpoint; four alternating rounds), a timed
/// checkpoint after a leave-running one took 0.88, 0.46, 0.46 and 0.46 s
/// with ragged pieces in both, 0.42-0.43 s with aligned pieces in both,
/// and 1.6-2.4 s with aligned pieces after a ragged one, the aligned
/// folios then coming from memory this VM had handed back to its host.
fn piece(at: u64, left: u64) -> usize {
    let room = BUF_LEN as u64 - at % BUF_LEN as u64;
    left.min(room) as usize
}

/// The [`piece`]s of a blob of `len` bytes at `off` in `pages.img`, in
/// order, as (offset within the blob, length).
fn pieces(off: u64, len: u64) -> impl Iterator<Item = (u64, usize)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        (done < len).then(|| {
            let n = piece(off + done, len - done);
            done += n as u64;
            (done - n as u64, n)
        })
    })
}

/// Reads, hashes and writes every job of `jobs` in [`piece`]s;
/// returns (blob offset, checksum) per job. With `tolerate`, a process
/// that has exited leaves its blobs with checksum 0.
fn copy_jobs(jobs: Vec<&CopyJob>, tolerate: bool, sink: &mut Writer) -> Result<Vec<(u64, u64)>> {
    jobs.into_iter()
        .map(|j| match copy_one(sink, j) {
            Err(Error::Io { cause, .. }) if tolerate && cause.raw_os_error() == Some(libc::ESRCH) => Ok((j.off, 0)),
            r => r,
        })
        .collect()
}

fn copy_one(sink: &mut Writer, j: &CopyJob) -> Result<(u64, u64)> {
    let mut h = crate::checksum::Stream::new();
    let write = |e: std::io::Error| Error::Io { context: "write pages.img".into(), cause: e };
    // In-memory sources are copied piece by piece into buffers too.
    let from_slice = |sink: &mut Writer, h: &mut crate::checksum::Stream, b: &[u8]| -> Result<()> {
        for (done, n) in pieces(j.off, b.len() as u64) {
            let part = &b[done as usize..done as usize + n];
            let mut buf = sink.buffer();
            buf[..n].copy_from_slice(part);
            h.update(part);
            sink.put(j.off + done, buf, n).map_err(write)?;
        }
        Ok(())
    };
    match &j.src {
        Source::Remote { pid, addr, readable } => {
            let mem = if *readable {
                None
            } else {
                Some(File::open(format!("/proc/{pid}/mem")).ctx(|| format!("open memory of task {pid}"))?)
            };
            for (done, n) in pieces(j.off, j.len) {
                let mut buf = sink.buffer();
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
                h.update(chunk);
                sink.put(j.off + done, buf, n).map_err(write)?;
            }
        }
        Source::Local { map: src, offset } => {
            let b = src.bytes().get(*offset..*offset + j.len as usize).ok_or_else(|| Error::Restore("local source range".into()))?;
            from_slice(sink, &mut h, b)?;
        }
        Source::Bytes(b) => {
            let mut v = b.clone();
            v.resize(j.len as usize, 0);
            from_slice(sink, &mut h, &v)?;
        }
    }
    Ok((j.off, h.digest()))
}

#[cfg(test)]
mod tests {
    use super::BUF_LEN;

    /// The pieces of a blob of `len` bytes at `off`, as (file offset, length).
    fn pieces(off: u64, len: u64) -> Vec<(u64, usize)> {
        super::pieces(off, len).map(|(done, n)| (off + done, n)).collect()
    }

    #[test]
    fn pieces_end_on_buffer_boundaries_of_the_file() {
        let b = BUF_LEN as u64;
        // A blob right after the header page: a short first piece, then
        // whole aligned ones, then the rest.
        let p = pieces(4096, 3 * b);
        assert_eq!(p.first(), Some(&(4096, BUF_LEN - 4096)));
        assert!(p[1..p.len() - 1].iter().all(|&(at, n)| at % b == 0 && n == BUF_LEN));
        assert_eq!(p.last(), Some(&(3 * b, 4096)));
        assert_eq!(p.iter().map(|&(_, n)| n as u64).sum::<u64>(), 3 * b);
        // An aligned blob is whole pieces; a small one is one piece.
        assert!(pieces(2 * b, 4 * b).iter().all(|&(at, n)| at % b == 0 && n == BUF_LEN));
        assert_eq!(pieces(b + 8192, 4096), vec![(b + 8192, 4096)]);
        // A piece never crosses a boundary, whatever the start.
        for off in [1u64, 4095, 4096, b - 1, b + 1] {
            for (at, n) in pieces(off, 5 * b + 12345) {
                assert!(n > 0 && n <= BUF_LEN);
                assert_eq!(at / b, (at + n as u64 - 1) / b, "piece at {at} of {n} crosses a boundary");
            }
        }
    }
}
