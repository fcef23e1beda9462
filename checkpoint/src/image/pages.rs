//! `pages.img`: the raw page data of an image (layout in [`super`]),
//! written by the dump's copy threads and mapped read-only by restore, and
//! the bounds checks every [`Blob`] passes before it is read.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::model::Blob;
use crate::sys::Mmap;

/// The Blob of `bytes` written at file offset `off`.
pub fn blob_for(off: u64, bytes: &[u8]) -> Blob {
    Blob {
        off,
        len: bytes.len() as u64,
        xxh3: xxh3_64(bytes),
    }
}

/// Bounds check of a blob against a pages.img whose data length is
/// `data_len`: `off` page aligned and past the header, `off + len` without
/// overflow and within the file.
pub fn check_blob(blob: &Blob, data_len: u64) -> Result<(), ImageError> {
    let Blob { off, len, .. } = *blob;
    if off % PAGE_SIZE != 0 {
        return Err(ImageError::BlobUnaligned { off });
    }
    if off < PAGE_SIZE {
        return Err(ImageError::BlobInHeader { off });
    }
    let end = off
        .checked_add(len)
        .ok_or(ImageError::BlobOverflow { off, len })?;
    let file_end = PAGE_SIZE.saturating_add(data_len);
    if end > file_end {
        return Err(ImageError::BlobOutOfBounds {
            off,
            len,
            end: file_end,
        });
    }
    Ok(())
}

/// Writer of pages.img, shared by the engine's copy threads.
#[derive(Debug)]
pub struct PagesWriter {
    file: File,
    next: AtomicU64,
    overflow: AtomicBool,
}

impl PagesWriter {
    /// Creates pages.img, the first file of a dump. Refuses a directory that
    /// already holds any image file (or a link planted in its place): a dump
    /// never overwrites, and never removes, what it did not create.
    pub fn create(dir: &Path) -> Result<Self, ImageError> {
        for name in [MetaKind::Tree.file_name(), MetaKind::Inventory.file_name()] {
            match std::fs::symlink_metadata(dir.join(name)) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ImageError::Symlink { file: name.into() })
                }
                Ok(_) => return Err(ImageError::Exists { file: name.into() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(name, "stat", e)),
            }
        }
        let file = create_file(dir, PAGES_FILE)?;
        // A zero header until finish(): an unfinished file has a bad magic.
        file.set_len(PAGE_SIZE)
            .map_err(|e| io_err(PAGES_FILE, "truncate", e))?;
        Ok(PagesWriter {
            file,
            next: AtomicU64::new(PAGE_SIZE),
            overflow: AtomicBool::new(false),
        })
    }

    /// Reserves room for `len` bytes (rounded up to whole pages) and returns
    /// its page-aligned file offset. Thread-safe. On overflow of the file
    /// offset space returns an offset no write can succeed at and makes
    /// `finish` fail.
    pub fn reserve(&self, len: u64) -> u64 {
        let need = len.checked_add(PAGE_SIZE - 1).map(|n| n & !(PAGE_SIZE - 1));
        let r = need.and_then(|need| {
            self.next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                    cur.checked_add(need)
                })
                .ok()
        });
        r.unwrap_or_else(|| {
            self.overflow.store(true, Ordering::Relaxed);
            !(PAGE_SIZE - 1)
        })
    }

    /// End of the reserved space (file length after `finish`).
    pub fn reserved_end(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes the header with the final data length and sets the file
    /// length. Returns the data length. Page data is not fsync'd (a GiB-sized
    /// fsync would dominate the dump; CRIU does not either): the metadata
    /// files are, and every blob's checksum is verified on restore, so pages
    /// lost to a crash make the image refused, never silently wrong.
    pub fn finish(&self) -> Result<u64, ImageError> {
        if self.overflow.load(Ordering::Relaxed) {
            return Err(ImageError::PagesOverflow);
        }
        let end = self.next.load(Ordering::Relaxed);
        let data_len = end - PAGE_SIZE; // next starts at PAGE_SIZE and only grows
        let mut head = vec![0u8; PAGE_SIZE as usize];
        head[..8].copy_from_slice(&PAGES_MAGIC);
        head[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        head[12..16].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        head[16..24].copy_from_slice(&data_len.to_le_bytes());
        self.file
            .set_len(end)
            .map_err(|e| io_err(PAGES_FILE, "truncate", e))?;
        self.file
            .write_all_at(&head, 0)
            .map_err(|e| io_err(PAGES_FILE, "write", e))?;
        Ok(data_len)
    }
}

/// Checks a pages.img header page; returns the data length.
fn check_pages_header(head: &[u8], file_len: u64) -> Result<u64, ImageError> {
    let file = || PAGES_FILE.to_string();
    let Some((h, rest)) = head.split_first_chunk::<32>() else {
        return Err(short_header(PAGES_FILE, &PAGES_MAGIC, head, PAGE_SIZE));
    };
    if h[..8] != PAGES_MAGIC {
        return Err(ImageError::BadMagic { file: file() });
    }
    if (head.len() as u64) < PAGE_SIZE {
        return Err(ImageError::Truncated {
            file: file(),
            expected: PAGE_SIZE,
            actual: file_len,
        });
    }
    check_version(h, &file())?;
    let page_size = u32_at(h, 12);
    if u64::from(page_size) != PAGE_SIZE {
        return Err(ImageError::BadHeader {
            file: file(),
            what: format!("page size {page_size}, expected {PAGE_SIZE}"),
        });
    }
    let data_len = u64_at(h, 16);
    if !data_len.is_multiple_of(PAGE_SIZE) {
        return Err(ImageError::BadHeader {
            file: file(),
            what: format!("data length {data_len} is not page aligned"),
        });
    }
    if u64_at(h, 24) != 0 || rest.iter().any(|&b| b != 0) {
        return Err(ImageError::BadHeader {
            file: file(),
            what: "reserved bytes are not zero".into(),
        });
    }
    let expected = data_len
        .checked_add(PAGE_SIZE)
        .ok_or_else(|| ImageError::BadHeader {
            file: file(),
            what: format!("data length {data_len} overflows"),
        })?;
    let actual = file_len - PAGE_SIZE;
    if file_len < expected {
        return Err(ImageError::Truncated {
            file: file(),
            expected: data_len,
            actual,
        });
    }
    if file_len > expected {
        return Err(ImageError::TrailingBytes {
            file: file(),
            expected: data_len,
            actual,
        });
    }
    Ok(data_len)
}

/// Read-only view of pages.img (mapped MAP_PRIVATE, PROT_READ).
pub struct PagesReader {
    file: File,
    map: Mmap,
    data_len: u64,
}

impl std::fmt::Debug for PagesReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagesReader").field("file", &self.file).field("map_len", &self.map.len()).field("data_len", &self.data_len).finish()
    }
}

impl PagesReader {
    /// Opens pages.img (O_NOFOLLOW, regular file), checks its header and
    /// length, and maps it. The image directory must not be modified while
    /// the reader lives (a file truncated under a mapping raises SIGBUS).
    pub fn open(dir: &Path) -> Result<Self, ImageError> {
        let (file, file_len) = open_regular(dir, PAGES_FILE)?;
        let mut head = vec![0u8; PAGE_SIZE.min(file_len) as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| io_err(PAGES_FILE, "read", e))?;
        let data_len = check_pages_header(&head, file_len)?;
        let map_len = usize::try_from(file_len).map_err(|_| ImageError::BadHeader {
            file: PAGES_FILE.into(),
            what: format!("file of {file_len} bytes cannot be mapped"),
        })?;
        // The header check guarantees a length of at least one page.
        let map = Mmap::map_fd(file.as_fd(), 0, map_len, libc::PROT_READ, true)
            .map_err(|e| io_err(PAGES_FILE, "mmap", e))?;
        Ok(PagesReader { file, map, data_len })
    }

    fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Data length (bytes after the header page).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The bytes of `blob`, bounds-checked and checksum-verified.
    pub fn get(&self, blob: &Blob) -> Result<&[u8], ImageError> {
        let b = self.get_unchecked_sum(blob)?;
        if xxh3_64(b) != blob.xxh3 {
            return Err(ImageError::BlobChecksum {
                off: blob.off,
                len: blob.len,
            });
        }
        Ok(b)
    }

    /// The bytes of `blob`, bounds-checked only (the caller verifies the sum).
    pub fn get_unchecked_sum(&self, blob: &Blob) -> Result<&[u8], ImageError> {
        check_blob(blob, self.data_len)?;
        let oob = || ImageError::BlobOutOfBounds {
            off: blob.off,
            len: blob.len,
            end: self.map.len() as u64,
        };
        let start = usize::try_from(blob.off).map_err(|_| oob())?;
        let end = usize::try_from(blob.off + blob.len).map_err(|_| oob())?; // no overflow: check_blob
        self.bytes().get(start..end).ok_or_else(oob)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
