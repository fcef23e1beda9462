//! Hostile images (issue 8): a checkpoint image travels through registries
//! and tarballs, so restore must refuse a damaged or forged one with a clear
//! error, never panic, never act on part of it.
//!
//! From one real image (the zdtm program `pipe_data`, two processes, pipes
//! with data, dumped by `stasis tree dump`):
//!
//! * every length prefix of `tree.img` and `inventory.img`, and a few of
//!   `pages.img`, is refused by `image::open_image` naming the file;
//! * every single-bit flip of `tree.img` and `inventory.img` is refused
//!   (in memory; and through files for the headers and a sample), flips in
//!   the header page of `pages.img` are refused when opening, flips in its
//!   data when the page is read (checksums), and `stasis tree restore`
//!   refuses such an image starting no process;
//! * crafted trees with a valid checksum but hostile content (kernel
//!   addresses, pid 0 and 4194305, huge counts, `..` in paths, data past the
//!   end, overlapping mappings, fd -1, parent cycles, ...) are refused by the
//!   validator, and by `stasis tree restore` (exit 1, the reason on stderr,
//!   no process started);
//! * what only the restoring host can know: a FIFO, file or device named
//!   by the image that is something else on disk is refused by the restore
//!   stub (a FIFO's queued bytes are never written into a regular file);
//! * links and special files planted in place of image files are refused;
//! * a seeded random mutation fuzzer runs the decoder
//!   (`image::fuzz_decode`) `HOSTILE_FUZZ_ITERS` times (default 200000).
//!
//! Run: `cargo build --release`, then
//! `cargo test --release -p stasis-integration --test hostile_images -- --test-threads=1`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use stasis_checkpoint::image::{self, decode_meta, encode_meta, ImageError, Inventory, MetaKind, FORMAT_VERSION};
use stasis_checkpoint::model::{
    Blob, FileKind, PageRun, ShmemImage, ShmemKind, TaskState, TreeImage, Vma, VmaKind,
};
use stasis_integration::zdtm::{
    become_subreaper, expect_no_new_processes, find_prog, live_descendants, Run,
};

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile")
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    become_subreaper();
    g
}

/// The files of a real image, dumped once per test process.
#[derive(Clone)]
struct Seed {
    inventory: Vec<u8>,
    tree: Vec<u8>,
    pages: Vec<u8>,
}

impl Seed {
    fn tree(&self) -> TreeImage {
        decode_meta::<TreeImage>(MetaKind::Tree, &self.tree).expect("seed tree.img").0
    }
    fn inventory(&self) -> Inventory {
        decode_meta::<Inventory>(MetaKind::Inventory, &self.inventory).expect("seed inventory.img").0
    }
    fn pages_len(&self) -> u64 {
        self.pages.len() as u64 - 4096
    }
}

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        // The image names files in the run directory (the program's log):
        // it is kept for restores to find, and removed by the next process.
        let runs = work_dir().join("run");
        for e in fs::read_dir(&runs).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("pipe_data-seed-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let mut run = Run::new(find_prog("pipe_data"), "seed", "", &work_dir());
        let r = (|| -> Result<Seed, String> {
            let pid = run.start()?;
            run.dump(pid, false)?;
            run.wait_unshare()?;
            run.pids.retain(|&p| p != pid);
            let read = |n: &str| fs::read(run.img.join(n)).map_err(|e| format!("read {n}: {e}"));
            Ok(Seed { inventory: read("inventory.img")?, tree: read("tree.img")?, pages: read("pages.img")? })
        })();
        match r {
            Ok(s) => {
                std::mem::forget(run);
                s
            }
            Err(e) => {
                let report = run.report(&e);
                drop(run);
                panic!("cannot make the seed image: {report}");
            }
        }
    })
}

/// An image directory (0700, files 0600) removed on drop.
struct ImageDir(PathBuf);

impl ImageDir {
    fn new(tag: &str) -> ImageDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = work_dir().join(format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(work_dir()).unwrap();
        fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
        ImageDir(p)
    }

    fn with(tag: &str, inventory: &[u8], tree: &[u8], pages: &[u8]) -> ImageDir {
        let d = ImageDir::new(tag);
        d.put("inventory.img", inventory);
        d.put("tree.img", tree);
        d.put("pages.img", pages);
        d
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        let p = self.0.join(name);
        let _ = fs::remove_file(&p);
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p).unwrap();
        fs::write(&p, bytes).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ImageDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `open_image` on `dir`: the error, or a panic turned into a test failure
/// naming `case`.
fn open_err(dir: &Path, case: &str) -> Option<ImageError> {
    match catch_unwind(AssertUnwindSafe(|| image::open_image(dir))) {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => panic!("open_image panicked on {case}"),
    }
}

fn refused(dir: &Path, case: &str) -> ImageError {
    open_err(dir, case).unwrap_or_else(|| panic!("{case}: accepted"))
}

fn frame(kind: MetaKind, payload: &[u8]) -> Vec<u8> {
    let sum = xxhash_of(payload);
    let mut out = Vec::with_capacity(payload.len() + 32);
    out.extend_from_slice(b"STASISMD");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload checksum of the image format (xxh3-64).
fn xxhash_of(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload)
}

// ---------------------------------------------------------------------------
// Truncation

#[test]
fn every_truncation_is_refused() {
    let _g = serial();
    let s = seed().clone();
    let d = ImageDir::with("trunc", &s.inventory, &s.tree, &s.pages);
    assert!(open_err(d.path(), "the seed").is_none(), "the seed image itself is refused");
    for (name, full) in [("tree.img", &s.tree), ("inventory.img", &s.inventory)] {
        for len in 0..full.len() {
            d.put(name, &full[..len]);
            let e = refused(d.path(), &format!("{name} cut to {len} bytes"));
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{name}: ")) && (msg.contains("truncated") || msg.contains("bad magic")),
                "{name} cut to {len} bytes: unclear error {msg:?}"
            );
            // In memory too.
            assert!(decode_meta::<serde_json::Value>(if name == "tree.img" { MetaKind::Tree } else { MetaKind::Inventory }, &full[..len]).is_err());
        }
        d.put(name, full);
    }
    let p = &s.pages;
    for len in [0, 1, 8, 31, 4095, 4096, 4097, p.len() - 4096, p.len() - 1] {
        d.put("pages.img", &p[..len]);
        let msg = refused(d.path(), &format!("pages.img cut to {len} bytes")).to_string();
        assert!(msg.starts_with("pages.img: "), "pages.img cut to {len}: {msg:?}");
    }
    d.put("pages.img", p);
    assert!(open_err(d.path(), "the restored seed").is_none());
}

// ---------------------------------------------------------------------------
// Bit flips

#[test]
fn every_bit_flip_is_refused() {
    let _g = serial();
    let s = seed().clone();
    for (kind, full) in [(MetaKind::Tree, &s.tree), (MetaKind::Inventory, &s.inventory)] {
        let mut b = full.clone();
        for i in 0..b.len() {
            for bit in 0..8 {
                b[i] ^= 1 << bit;
                let r = catch_unwind(AssertUnwindSafe(|| decode_meta::<serde_json::Value>(kind, &b).is_err()));
                match r {
                    Ok(true) => {}
                    Ok(false) => panic!("{}: flip of byte {i} bit {bit} accepted", kind.file_name()),
                    Err(_) => panic!("{}: flip of byte {i} bit {bit} panicked", kind.file_name()),
                }
                b[i] ^= 1 << bit;
            }
        }
    }
    // Through files and open_image: every bit of inventory.img and of
    // tree.img's header, a sample of tree.img's payload bits.
    let d = ImageDir::with("flip", &s.inventory, &s.tree, &s.pages);
    let mut rng = Rng(0x5eed_f11b);
    let mut cases: Vec<(&str, usize, u8)> = Vec::new();
    for i in 0..s.inventory.len() {
        for bit in 0..8 {
            cases.push(("inventory.img", i, bit));
        }
    }
    for i in 0..32 {
        for bit in 0..8 {
            cases.push(("tree.img", i, bit));
        }
    }
    for _ in 0..512 {
        cases.push(("tree.img", 32 + rng.below(s.tree.len() as u64 - 32) as usize, rng.below(8) as u8));
    }
    for (name, i, bit) in cases {
        let mut b = if name == "tree.img" { s.tree.clone() } else { s.inventory.clone() };
        b[i] ^= 1 << bit;
        d.put(name, &b);
        let msg = refused(d.path(), &format!("{name} byte {i} bit {bit} flipped")).to_string();
        assert!(msg.starts_with(&format!("{name}: ")), "{name} byte {i} bit {bit}: unclear error {msg:?}");
        d.put(name, if name == "tree.img" { &s.tree } else { &s.inventory });
    }
}

#[test]
fn pages_bit_flips_are_refused() {
    let _g = serial();
    let s = seed().clone();
    let tree = s.tree();
    let d = ImageDir::with("pages-flip", &s.inventory, &s.tree, &s.pages);
    let mut rng = Rng(0xbad_9a9e5);
    // Header page: refused on open.
    let mut header_bits: Vec<usize> = (0..32 * 8).collect();
    header_bits.extend((0..256).map(|_| 32 * 8 + rng.below((4096 - 32) * 8) as usize));
    for bitpos in header_bits {
        let mut p = s.pages.clone();
        p[bitpos / 8] ^= 1 << (bitpos % 8);
        d.put("pages.img", &p);
        let msg = refused(d.path(), &format!("pages.img header bit {bitpos}")).to_string();
        assert!(msg.starts_with("pages.img: "), "header bit {bitpos}: {msg:?}");
    }
    // Data: every blob covering the flipped byte fails its checksum when read.
    let blobs = all_blobs(&tree);
    assert!(!blobs.is_empty());
    for _ in 0..256 {
        let off = 4096 + rng.below(s.pages_len()) as usize;
        let mut p = s.pages.clone();
        p[off] ^= 1 << rng.below(8);
        d.put("pages.img", &p);
        let (_, _, pages) = image::open_image(d.path()).expect("data flips are found when read");
        let covering: Vec<&Blob> = blobs.iter().filter(|b| (b.off..b.off + b.len).contains(&(off as u64))).collect();
        for b in &blobs {
            let r = pages.get(b);
            if covering.contains(&b) {
                let e = r.expect_err("a flipped blob reads back");
                assert!(e.to_string().contains("checksum mismatch"), "{e}");
            } else {
                assert!(r.is_ok(), "blob {:#x} unaffected by a flip at {off:#x}", b.off);
            }
        }
    }
    // And stasis tree restore refuses one, starting nothing.
    let b = blobs.iter().max_by_key(|b| b.len).expect("a blob");
    let mut p = s.pages.clone();
    p[b.off as usize + b.len as usize / 2] ^= 0x10;
    d.put("pages.img", &p);
    cli_refuses(d.path(), "checksum mismatch", "a page data flip");
}

fn all_blobs(t: &TreeImage) -> Vec<Blob> {
    let mut v = Vec::new();
    for task in &t.tasks {
        if let Some(mm) = &task.mm {
            v.extend(mm.vmas.iter().flat_map(|vma| vma.pages.iter().map(|r| r.data)));
        }
    }
    for f in &t.files {
        match &f.kind {
            FileKind::Pipe { data: Some(b), .. } | FileKind::Fifo { data: Some(b), .. } => v.push(*b),
            FileKind::Unlinked { data, .. } => v.push(*data),
            _ => {}
        }
    }
    v.extend(t.shmem.iter().flat_map(|s| s.pages.iter().map(|r| r.data)));
    v
}

// ---------------------------------------------------------------------------
// Crafted trees: valid frame and checksum, hostile content

/// Writes `tree` (and `inv`, defaulting to one that matches it) as an image
/// with the seed's pages.img.
fn crafted_dir(tag: &str, tree: &TreeImage, inv: Option<Inventory>) -> ImageDir {
    let s = seed();
    let (tree_bytes, sum) = encode_meta(MetaKind::Tree, tree).expect("encode");
    let mut inv = inv.unwrap_or_else(|| s.inventory());
    inv.tree_xxh3 = sum;
    if inv.tasks as usize == s.tree().tasks.len() {
        inv.tasks = tree.tasks.len() as u32;
    }
    if inv.root_pid == s.tree().root {
        inv.root_pid = tree.root;
    }
    let (inv_bytes, _) = encode_meta(MetaKind::Inventory, &inv).expect("encode");
    ImageDir::with(tag, &inv_bytes, &tree_bytes, &s.pages)
}

/// `stasis tree restore` of `dir` exits 1 with `want` on stderr and leaves
/// no process behind.
fn cli_refuses(dir: &Path, want: &str, case: &str) {
    let mut run = Run::new(find_prog("pipe_data"), "hostile-restore", "", &work_dir());
    let r = (|| -> Result<(), String> {
        let before = live_descendants();
        let args = ["tree", "restore", "--image-path", dir.to_str().expect("utf-8")];
        let o = run.stasis_outcome("restore", &args, &[])?;
        if let Ok(pid) = o.stdout.trim().parse::<i32>() {
            run.pids.push(pid); // restored after all: cleanup kills it
        }
        // The log line quotes the message: undo its escaping.
        let stderr = o.stderr.replace("\\\"", "\"");
        if o.status.code() != Some(1) || !stderr.contains(want) || !o.stdout.trim().is_empty() {
            return Err(format!("expected exit 1 and {want:?}; got {} stdout {:?} stderr {:?}", o.status, o.stdout, o.stderr));
        }
        expect_no_new_processes(&mut run, &before, Duration::from_secs(3))
    })();
    if let Err(e) = r {
        let report = run.report(&format!("{case}: {e}"));
        drop(run);
        panic!("{report}");
    }
}

type Craft = Box<dyn Fn(&mut TreeImage)>;

fn anon_vma(start: u64, end: u64) -> Vma {
    Vma {
        start,
        end,
        prot: libc::PROT_READ | libc::PROT_WRITE,
        flags: libc::MAP_PRIVATE,
        pgoff: 0,
        kind: VmaKind::Anon,
        madvise: vec![],
        accounted: false,
        mlock: 0,
        pages: vec![],
    }
}

fn first_run(t: &mut TreeImage) -> &mut PageRun {
    t.tasks[0].mm.as_mut().unwrap().vmas.iter_mut().flat_map(|v| v.pages.iter_mut()).next().expect("a dumped page")
}

fn data_pipe(t: &mut TreeImage) -> &mut FileKind {
    &mut t.files.iter_mut().find(|f| matches!(f.kind, FileKind::Pipe { data: Some(_), .. })).expect("a pipe with data").kind
}

fn regular_file(t: &mut TreeImage) -> &mut FileKind {
    &mut t.files.iter_mut().find(|f| matches!(f.kind, FileKind::Regular { .. })).expect("a regular file (the log)").kind
}

fn set_path(k: &mut FileKind, p: &str) {
    if let FileKind::Regular { path, .. } = k {
        *path = p.into();
    }
}

/// Every crafted case: name, mutation, the reason the refusal must give.
fn crafted_cases() -> Vec<(&'static str, Craft, &'static str)> {
    let huge_tid = |n: usize| move |t: &mut TreeImage| {
        let th = t.tasks[0].threads[0].clone();
        t.tasks[0].threads = (0..n).map(|i| {
            let mut c = th.clone();
            if i > 0 {
                c.tid = 100_000 + i as i32;
            }
            c
        }).collect();
    };
    vec![
        ("vma in kernel space", Box::new(|t| t.tasks[0].mm.as_mut().unwrap().vmas.push(anon_vma(0xffff_8000_0000_0000, 0xffff_8000_0000_1000))), "beyond user space"),
        ("vma at page zero", Box::new(|t| t.tasks[0].mm.as_mut().unwrap().vmas.insert(0, anon_vma(0, 0x1000))), "below 0x10000"),
        ("vma end before start", Box::new(|t| { let v = &mut t.tasks[0].mm.as_mut().unwrap().vmas[0]; v.end = v.start; }), "unaligned or empty"),
        ("overlapping vmas", Box::new(|t| { let vs = &mut t.tasks[0].mm.as_mut().unwrap().vmas; let v = vs[1].clone(); vs.insert(1, v); }), "overlaps"),
        ("pid 0", Box::new(|t| { t.tasks[1].pid = 0; }), "pid 0 out of range"),
        ("pid 4194305", Box::new(|t| { t.tasks[1].pid = 4_194_305; }), "pid 4194305 out of range"),
        ("negative pid", Box::new(|t| { t.tasks[1].pid = -7; }), "pid -7 out of range"),
        ("root pid 0", Box::new(|t| { t.root = 0; t.tasks[0].pid = 0; }), "root pid 0 out of range"),
        ("tid 4194305", Box::new(|t| { let mut th = t.tasks[0].threads[0].clone(); th.tid = 4_194_305; t.tasks[0].threads.push(th); }), "tid 4194305 out of range"),
        ("4097 threads", Box::new(huge_tid(4097)), "4097 threads"),
        ("65537 vmas", Box::new(|t| { t.tasks[1].mm.as_mut().unwrap().vmas = (0..65537u64).map(|i| anon_vma(0x10_0000 + i * 0x1000, 0x10_1000 + i * 0x1000)).collect(); }), "65537 vmas"),
        ("1048577 fds", Box::new(|t| { let f = t.tasks[1].fds[0].clone(); t.tasks[1].fds = (0..(1 << 20) + 1).map(|i| { let mut x = f.clone(); x.fd = i; x }).collect(); }), "1048577 fds"),
        ("65537 pending signals", Box::new(|t| { t.tasks[0].shared_pending = vec![vec![0; 128]; 65537]; }), "65537 pending signals"),
        ("65 sigactions", Box::new(|t| { let a = t.tasks[0].sigactions[0]; t.tasks[0].sigactions.push(a); }), "65 sigactions"),
        ("65537 groups", Box::new(|t| { t.tasks[0].creds.groups = vec![0; 65537]; }), "65537 supplementary groups"),
        ("xsave of 1 MiB", Box::new(|t| { t.tasks[0].threads[0].xsave = vec![0; 1 << 20]; }), "xsave area of 1048576 bytes"),
        ("short siginfo", Box::new(|t| { t.tasks[0].threads[0].pending = vec![vec![1; 3]]; }), "pending siginfo of 3 bytes"),
        ("huge page count", Box::new(|t| { first_run(t).npages = u64::MAX / 2; }), "overflows"),
        ("page data past the end", Box::new(|t| { let end = seed().pages_len(); first_run(t).data.off = 4096 + end + 8 * 4096; }), "out of bounds"),
        ("page data in the header", Box::new(|t| { first_run(t).data.off = 0; }), "points into the header page"),
        ("unaligned page data", Box::new(|t| { first_run(t).data.off += 1; }), "not page aligned"),
        ("page data of the wrong size", Box::new(|t| { first_run(t).data.len += 4096; }), "bytes for"),
        ("pipe data of 2^64-1 bytes", Box::new(|t| { if let FileKind::Pipe { data: Some(d), .. } = data_pipe(t) { d.len = u64::MAX; } }), "exceed pipe capacity"),
        ("pipe capacity 2^31", Box::new(|t| { if let FileKind::Pipe { capacity, .. } = data_pipe(t) { *capacity = 1 << 31; } }), "pipe capacity 2147483648"),
        ("vma path with ..", Box::new(|t| { t.tasks[0].mm.as_mut().unwrap().vmas[0].kind = VmaKind::File { path: "/usr/lib/../../etc/shadow".into() }; }), "'..' component"),
        ("file path with ..", Box::new(|t| set_path(regular_file(t), "/tmp/../etc/passwd")), "'..' component"),
        ("relative file path", Box::new(|t| set_path(regular_file(t), "etc/passwd")), "is not absolute"),
        ("file path with NUL", Box::new(|t| set_path(regular_file(t), "/tmp/a\0b")), "contains NUL"),
        ("file path of 5000 bytes", Box::new(|t| set_path(regular_file(t), &format!("/{}", "a".repeat(5000)))), "too long"),
        ("cwd with ..", Box::new(|t| { t.tasks[0].fs.cwd = "/a/../..".into(); }), "cwd: path"),
        ("relative exe", Box::new(|t| { t.tasks[0].mm.as_mut().unwrap().exe = "bin/sh".into(); }), "exe: path \"bin/sh\" is not absolute"),
        ("fd -1", Box::new(|t| { t.tasks[0].fds[0].fd = -1; }), "fd -1 out of range"),
        ("duplicate fd", Box::new(|t| { let f = t.tasks[0].fds[0].clone(); t.tasks[0].fds.push(f); }), "out of range or duplicate"),
        ("fd of a missing file", Box::new(|t| { t.tasks[0].fds[0].file = 99_999; }), "refers to missing file 99999"),
        ("file opened O_TRUNC", Box::new(|t| { t.files[0].flags |= libc::O_TRUNC; }), "bad flags"),
        ("set-uid deleted file", Box::new(|t| { let id = t.files.len() as u32; t.files.push(stasis_checkpoint::model::FileImage { id, flags: 0, pos: 0, owner: None, kind: FileKind::Unlinked { path: "/tmp/suid".into(), mode: 0o104755, data: Blob { off: 4096, len: 0, xxh3: 0 } } }); }), "set-id mode"),
        ("root's parent in the tree", Box::new(|t| { t.tasks[0].ppid = t.tasks[1].pid; }), "(a cycle)"),
        ("own parent", Box::new(|t| { t.tasks[1].ppid = t.tasks[1].pid; }), "is its own parent"),
        ("parent cycle", Box::new(|t| {
            let mut c = t.tasks[1].clone();
            c.pid = 3;
            c.threads[0].tid = 3;
            c.ppid = t.tasks[1].pid;
            t.tasks[1].ppid = 3;
            t.tasks.push(c);
        }), "listed before its parent 3"),
        ("parent outside", Box::new(|t| { t.tasks[1].ppid = 77; }), "parent 77 is not in the image"),
        ("group led from nowhere", Box::new(|t| { t.tasks[1].pgid = 77; }), "process group 77 is led by no task"),
        ("stopped by SIGKILL", Box::new(|t| { t.tasks[1].state = TaskState::Stopped { signal: libc::SIGKILL }; }), "stopped by bad signal 9"),
        ("zombie stopped by SIGSTOP", Box::new(|t| {
            let z = &mut t.tasks[1];
            z.state = TaskState::Zombie { status: libc::SIGSTOP };
            z.threads.clear();
            z.mm = None;
            z.fds.clear();
        }), "impossible exit status"),
        ("file id past the end", Box::new(|t| { t.files.last_mut().unwrap().id = 4_000_000; }), "id out of order"),
        ("shmem id past the end", Box::new(|t| t.shmem.push(ShmemImage { id: 4242, size: 4096, kind: ShmemKind::SysV { key: 0, shmid: 1, mode: 0o600, uid: 0, gid: 0 }, pages: vec![] })), "shmem 4242: id out of order"),
        ("forged SysV segment", Box::new(|t| t.shmem.push(ShmemImage { id: t.shmem.len() as u32, size: 4096, kind: ShmemKind::SysV { key: 0, shmid: -1, mode: 0o600, uid: 0, gid: 0 }, pages: vec![] })), "SysV segment id -1"),
        ("rlimit above its max", Box::new(|t| { let r = &mut t.tasks[0].rlimits[0]; r.cur = r.max.wrapping_add(1).max(1); r.max = r.cur - 1; }), "invalid or duplicate"),
        ("comm with NUL", Box::new(|t| { t.tasks[0].comm = "x\0y".into(); }), "bad name"),
        ("page size 64 KiB", Box::new(|t| { t.host.page_size = 65536; }), "host page size 65536"),
        ("no tasks", Box::new(|t| { t.tasks.clear(); }), "0 tasks"),
    ]
}

#[test]
fn crafted_trees_are_refused_by_the_validator() {
    let _g = serial();
    let base = seed().tree();
    let mut failures = Vec::new();
    for (name, craft, want) in crafted_cases() {
        let mut t = base.clone();
        craft(&mut t);
        let d = crafted_dir("crafted", &t, None);
        match open_err(d.path(), name) {
            None => failures.push(format!("{name}: accepted")),
            Some(e) => {
                let msg = e.to_string();
                if !msg.starts_with("tree.img: invalid image: ") || !msg.contains(want) {
                    failures.push(format!("{name}: error {msg:?} lacks {want:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn crafted_inventories_are_refused() {
    let _g = serial();
    let s = seed();
    let t = s.tree();
    let future = format!("unsupported format version {}", FORMAT_VERSION + 1);
    let cases: Vec<(&str, Inventory, &str)> = vec![
        ("task count", Inventory { tasks: u32::MAX, ..s.inventory() }, "does not match the image"),
        ("absolute parent", Inventory { parent: Some("/etc".into()), ..s.inventory() }, "must be a relative path"),
        ("pages length", Inventory { pages_len: s.pages_len() + 4096, ..s.inventory() }, "pages length"),
        ("future format", Inventory { format_version: FORMAT_VERSION + 1, ..s.inventory() }, &future),
    ];
    for (name, inv, want) in cases {
        let d = crafted_dir("inventory", &t, Some(inv));
        let msg = refused(d.path(), name).to_string();
        assert!(msg.starts_with("inventory.img: ") && msg.contains(want), "{name}: {msg:?} lacks {want:?}");
    }
    // A tree.img from another dump (its checksum differs from the inventory's).
    let mut other = t.clone();
    other.host.kernel.push('x');
    let (tree_bytes, _) = encode_meta(MetaKind::Tree, &other).unwrap();
    let d = ImageDir::with("mixed", &s.inventory, &tree_bytes, &s.pages);
    let msg = refused(d.path(), "mixed dumps").to_string();
    assert!(msg.contains("tree.img checksum differs"), "{msg}");
}

/// The same crafted images through `stasis tree restore`: exit 1, the
/// reason on stderr, no process started. (The few huge ones only in the
/// library test above, to keep this quick.)
#[test]
fn crafted_trees_are_refused_by_restore() {
    let _g = serial();
    let base = seed().tree();
    for (name, craft, want) in crafted_cases() {
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let mut t = base.clone();
        craft(&mut t);
        let d = crafted_dir("crafted-cli", &t, None);
        cli_refuses(d.path(), want, name);
    }
}

/// A hostile edit of a tree image: its name, the edit, and the expected error.
type Case<'a> = (&'a str, Box<dyn Fn(&mut TreeImage) + 'a>, &'a str);

/// Valid for the validator, wrong on this host: the stub checks what a path
/// is before opening it. A FIFO whose queued bytes would be written into a
/// regular file, a "regular file" that is a FIFO (opening it would block),
/// a "device" that is a regular file.
#[test]
fn file_kinds_are_checked_on_the_host() {
    let _g = serial();
    let base = seed().tree();
    let d = ImageDir::new("host-files");
    let victim = d.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let fifo = d.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let victim_s = victim.to_str().unwrap().to_string();
    let fifo_s = fifo.to_str().unwrap().to_string();
    let cases: Vec<Case> = vec![
        ("FIFO that is a regular file", Box::new(|t: &mut TreeImage| {
            let k = data_pipe(t);
            if let FileKind::Pipe { pipe, capacity, data } = k.clone() {
                *k = FileKind::Fifo { path: victim_s.clone(), pipe, capacity, data };
            }
        }), "file type 100000, the image expects 10000"),
        ("regular file that is a FIFO", Box::new(|t: &mut TreeImage| set_path(regular_file(t), &fifo_s)), "file type 10000, the image expects 100000"),
        ("device that is a regular file", Box::new(|t: &mut TreeImage| {
            *regular_file(t) = FileKind::CharDevice { path: victim_s.clone(), rdev: 0x103 };
        }), "file type 100000, the image expects 20000"),
    ];
    for (name, craft, want) in cases {
        let mut t = base.clone();
        craft(&mut t);
        image::open_image(crafted_dir("host-valid", &t, None).path()).unwrap_or_else(|e| panic!("{name}: the validator already refuses it: {e}"));
        let img = crafted_dir("host-files-img", &t, None);
        cli_refuses(img.path(), want, name);
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{name}: the victim file was written");
    }
}

// ---------------------------------------------------------------------------
// Planted links and special files

#[test]
fn planted_links_and_special_files_are_refused() {
    let _g = serial();
    let s = seed().clone();
    let elsewhere = ImageDir::with("genuine", &s.inventory, &s.tree, &s.pages);
    for name in ["inventory.img", "tree.img", "pages.img"] {
        let d = ImageDir::with("planted", &s.inventory, &s.tree, &s.pages);
        fs::remove_file(d.path().join(name)).unwrap();
        // A link to the genuine file: following it would succeed.
        std::os::unix::fs::symlink(elsewhere.path().join(name), d.path().join(name)).unwrap();
        let msg = refused(d.path(), &format!("{name} as a link")).to_string();
        assert_eq!(msg, format!("{name}: is a symbolic link (refused)"));
        cli_refuses(d.path(), &format!("{name}: is a symbolic link (refused)"), &format!("{name} as a link"));
        fs::remove_file(d.path().join(name)).unwrap();
        // A FIFO (reading it would block) and a directory.
        let c = std::ffi::CString::new(d.path().join(name).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let msg = refused(d.path(), &format!("{name} as a FIFO")).to_string();
        assert_eq!(msg, format!("{name}: not a regular file"));
        fs::remove_file(d.path().join(name)).unwrap();
        fs::create_dir(d.path().join(name)).unwrap();
        let msg = refused(d.path(), &format!("{name} as a directory")).to_string();
        assert_eq!(msg, format!("{name}: not a regular file"));
    }
}

// ---------------------------------------------------------------------------
// Randomized decoder fuzzing (no nightly toolchain needed)

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// One mutation of a framed metadata file; half the time the frame (length
/// and checksum) is fixed up so the JSON decoder and the validator see it.
fn mutate(rng: &mut Rng, seed: &[u8], kind: MetaKind) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        "0", "-1", "1", "4096", "4194304", "4194305", "2147483647", "-2147483648", "4294967295", "4294967296",
        "18446744073709551615", "18446744073709551616", "1e400", "-0", "0.5", "null", "true", "[]", "{}", "\"\"",
        "\"/../..\"", "[[[[[[[[[[", "\"Zombie\"", "{\"Stopped\":{\"signal\":9}}",
    ];
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = b.len() as u64;
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let i = rng.below(len) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len) as usize;
                b[i] = rng.next() as u8;
            }
            3 if len > 0 => {
                b.truncate(rng.below(len) as usize);
            }
            4 if len > 32 => {
                let a = 32 + rng.below(len - 32) as usize;
                let n = (rng.below(64) as usize).min(b.len() - a);
                b.drain(a..a + n);
            }
            5 if len > 32 => {
                let a = 32 + rng.below(len - 32) as usize;
                let n = (rng.below(256) as usize).min(b.len() - a);
                let chunk = b[a..a + n].to_vec();
                let at = 32 + rng.below(b.len() as u64 - 32) as usize;
                b.splice(at..at, chunk);
            }
            _ => {
                // Replace a number (or a string) with a hostile token.
                let starts: Vec<usize> = (32..b.len())
                    .filter(|&i| (b[i].is_ascii_digit() || b[i] == b'"') && !b[i - 1].is_ascii_digit())
                    .collect();
                if let Some(&a) = starts.get(rng.below(starts.len() as u64) as usize) {
                    let mut e = a + 1;
                    if b[a] == b'"' {
                        while e < b.len() && b[e] != b'"' {
                            e += 1;
                        }
                        e = (e + 1).min(b.len());
                    } else {
                        while e < b.len() && (b[e].is_ascii_digit() || b[e] == b'-') {
                            e += 1;
                        }
                    }
                    let tok = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                    b.splice(a..e, tok.bytes());
                }
            }
        }
    }
    if rng.below(2) == 0 && b.len() >= 32 {
        b = frame(kind, &b[32..]);
    }
    b
}

#[test]
fn randomized_decoder_fuzz() {
    let _g = serial();
    let s = seed().clone();
    let iters: u64 = std::env::var("HOSTILE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut rng = Rng(std::env::var("HOSTILE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x0123_4567_89ab_cdef));
    let start = rng.0;
    for i in 0..iters {
        let (seed_bytes, kind) = if rng.below(4) == 0 { (&s.inventory, MetaKind::Inventory) } else { (&s.tree, MetaKind::Tree) };
        let input = mutate(&mut rng, seed_bytes, kind);
        if catch_unwind(AssertUnwindSafe(|| image::fuzz_decode(&input))).is_err() {
            let out = work_dir().join(format!("fuzz-crash-{i}.bin"));
            let _ = fs::create_dir_all(work_dir());
            let _ = fs::write(&out, &input);
            panic!("fuzz_decode panicked on iteration {i} (seed {start:#x}); input saved to {}", out.display());
        }
    }
}
