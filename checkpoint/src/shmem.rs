//! Shared memory: anonymous `MAP_SHARED` regions, memfds and SysV segments.
//! Each object is stored once, however many tasks map it, and recreated once
//! on restore; every sharer then maps the same object.
//!
//! Dump reads an object's pages through the engine's own mapping of it
//! (`/proc/pid/map_files`, or `shmat` inside the tree's IPC namespace for
//! SysV) and stores only resident pages. Restore recreates anonymous and
//! memfd objects as memfds (as CRIU does), and SysV segments with their
//! original id by steering `kernel/shm_next_id` inside the IPC namespace.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use crate::error::{Context, Error, Result};
use crate::image::PagesWriter;
use crate::copier::{Copier, Source};
use crate::memory::chunks;
use crate::model::{PageRun, ShmemImage, ShmemKind, VmaKind};
use crate::proc::MapEntry;
use crate::sys::{self, Mmap};

#[derive(Default)]
pub struct ShmemTable {
    by_key: HashMap<(String, u64), u32>,
    pub objects: Vec<ShmemImage>,
}

/// A SysV segment as listed in `/proc/sysvipc/shm`.
#[derive(Debug, Clone)]
pub struct SysvSeg {
    pub key: i32,
    pub shmid: i32,
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
}

/// Segments of the calling thread's IPC namespace.
pub fn list_sysv() -> std::io::Result<Vec<SysvSeg>> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm")?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(SysvSeg {
                key: f.first()?.parse().ok()?,
                shmid: f.get(1)?.parse().ok()?,
                mode: u32::from_str_radix(f.get(2)?, 8).ok()?,
                size: f.get(3)?.parse().ok()?,
                uid: f.get(7)?.parse().ok()?,
                gid: f.get(8)?.parse().ok()?,
            })
        })
        .collect())
}

fn resident_runs(map: &Arc<Mmap>, w: &PagesWriter, copier: &mut Copier) -> std::io::Result<Vec<PageRun>> {
    let res = map.resident_pages()?;
    let mut runs = Vec::new();
    let mut i = 0;
    while i < res.len() {
        if !res[i] {
            i += 1;
            continue;
        }
        let s = i;
        while i < res.len() && res[i] {
            i += 1;
        }
        for (a, b) in chunks(s as u64 * 4096, i as u64 * 4096) {
            let data = copier.add(w, Source::Local { map: map.clone(), offset: a as usize }, b - a);
            runs.push(PageRun { addr: a, npages: (b - a) / 4096, data, parent: 0 });
        }
    }
    Ok(runs)
}

impl ShmemTable {
    fn add_object(&mut self, key: (String, u64), kind: ShmemKind, file: &File, w: &PagesWriter, copier: &mut Copier) -> Result<u32> {
        let size = file.metadata().ctx(|| "stat shared memory".into())?.len();
        let map = Arc::new(
            Mmap::map_fd(file.as_fd(), 0, size as usize, libc::PROT_READ, false).ctx(|| "map shared memory".into())?,
        );
        let pages = resident_runs(&map, w, copier).ctx(|| "scan shared memory".into())?;
        let id = self.objects.len() as u32;
        self.objects.push(ShmemImage { id, size, kind, pages });
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// Classifies a `MAP_SHARED` VMA, recording its object the first time.
    pub fn vma_kind(
        &mut self,
        pid: i32,
        vpid: i32,
        m: &MapEntry,
        root_prefix: &str,
        w: &PagesWriter,
        copier: &mut Copier,
    ) -> Result<VmaKind> {
        let key = (m.dev.clone(), m.inode);
        if let Some(&id) = self.by_key.get(&key) {
            return Ok(VmaKind::Shmem { id });
        }
        let p = m.path.as_str();
        if let Some(rest) = p.strip_prefix("/SYSV") {
            let skey = i32::from_str_radix(rest.split(' ').next().unwrap_or(""), 16).unwrap_or(0);
            let id = self.objects.len() as u32;
            // Filled in by `dump_sysv` from inside the IPC namespace.
            self.objects.push(ShmemImage {
                id,
                size: 0,
                kind: ShmemKind::SysV { key: skey, shmid: m.inode as i32, mode: 0, uid: 0, gid: 0 },
                pages: Vec::new(),
            });
            self.by_key.insert(key, id);
            return Ok(VmaKind::Shmem { id });
        }
        let is_anon = p == "/dev/zero (deleted)" || p.starts_with("/dev/zero");
        let memfd = p.strip_prefix("/memfd:").map(|n| n.trim_end_matches(" (deleted)").to_string());
        if !is_anon && memfd.is_none() {
            if p.ends_with(" (deleted)") || !p.starts_with('/') {
                return Err(Error::Unsupported { pid: vpid, what: format!("shared mapping of {p} at {:#x}", m.start) });
            }
            return Ok(VmaKind::File { path: crate::files::strip_root(root_prefix, p, vpid)? });
        }
        let f = File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
            .ctx(|| format!("open shared mapping of task {vpid} at {:#x}", m.start))?;
        let kind = match memfd {
            Some(name) => ShmemKind::Memfd { name, seals: seals_of(&f) },
            None => ShmemKind::Anon,
        };
        Ok(VmaKind::Shmem { id: self.add_object(key, kind, &f, w, copier)? })
    }

    /// The shared memory object behind memfd fd `fd` of task `pid`.
    pub fn memfd(&mut self, pid: i32, fd: i32, name: &str, w: &PagesWriter, copier: &mut Copier) -> Result<u32> {
        let f = File::open(format!("/proc/{pid}/fd/{fd}")).ctx(|| format!("open memfd {fd} of task {pid}"))?;
        let st = nix::sys::stat::fstat(f.as_raw_fd()).ctx(|| "stat memfd".into())?;
        let key = (format!("{:02x}:{:02x}", libc::major(st.st_dev), libc::minor(st.st_dev)), st.st_ino);
        // A memfd that is also mapped was keyed by its maps dev string; normalise by inode.
        if let Some((_, &id)) = self.by_key.iter().find(|((_, ino), _)| *ino == key.1) {
            return Ok(id);
        }
        let kind = ShmemKind::Memfd { name: name.to_string(), seals: seals_of(&f) };
        self.add_object(key, kind, &f, w, copier)
    }

    /// Fills in the SysV segments: all of the namespace when `all` (the tree
    /// owns its IPC namespace), else only those the tree has attached.
    pub fn dump_sysv(&mut self, pid: i32, all: bool, w: &PagesWriter, copier: &mut Copier) -> Result<()> {
        let wanted: Vec<i32> = self
            .objects
            .iter()
            .filter_map(|o| match o.kind {
                ShmemKind::SysV { shmid, .. } => Some(shmid),
                _ => None,
            })
            .collect();
        if wanted.is_empty() && !all {
            return Ok(());
        }
        let segs = sys::in_ipc_ns(pid, move || {
            let mut out = Vec::new();
            for s in list_sysv()? {
                if !all && !wanted.contains(&s.shmid) {
                    continue;
                }
                let seg = sys::shm_attach_ro(s.shmid, s.size as usize)?;
                let mut pages = Vec::new();
                for (i, page) in seg.bytes().chunks(4096).enumerate() {
                    if page.iter().any(|&b| b != 0) {
                        pages.push((i as u64 * 4096, page.to_vec()));
                    }
                }
                drop(seg);
                out.push((s, pages));
            }
            Ok(out)
        })
        .ctx(|| "read SysV shared memory".into())?;
        for (s, pages) in segs {
            let kind = ShmemKind::SysV { key: s.key, shmid: s.shmid, mode: s.mode & 0o777, uid: s.uid, gid: s.gid };
            let id = match self.objects.iter().position(|o| matches!(o.kind, ShmemKind::SysV { shmid, .. } if shmid == s.shmid)) {
                Some(i) => i,
                None => {
                    self.objects.push(ShmemImage { id: self.objects.len() as u32, size: 0, kind: kind.clone(), pages: vec![] });
                    self.objects.len() - 1
                }
            };
            let o = &mut self.objects[id];
            o.kind = kind;
            o.size = s.size;
            o.pages = pages
                .into_iter()
                .map(|(off, b)| {
                    let len = b.len() as u64;
                    PageRun { addr: off, npages: 1, data: copier.add(w, Source::Bytes(b), len.max(4096)), parent: 0 }
                })
                .collect();
        }
        if let Some(o) = self.objects.iter().find(|o| matches!(o.kind, ShmemKind::SysV { .. }) && o.size == 0) {
            return Err(Error::Unsupported { pid, what: format!("SysV segment of object {} vanished during dump", o.id) });
        }
        Ok(())
    }

    /// Fills checksums computed by the copier.
    pub fn fill_sums(&mut self, sums: &HashMap<u64, u64>) {
        for o in &mut self.objects {
            for r in &mut o.pages {
                if let Some(s) = sums.get(&r.data.off) {
                    r.data.xxh3 = *s;
                }
            }
        }
    }
}

fn seals_of(f: &File) -> i32 {
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).unwrap_or(0)
}
