//! On-disk format of a checkpoint image.
//!
//! An image is one FLAT directory (containerd/CRI untar it flat, so no
//! subdirectories), mode 0700, every file mode 0600:
//!
//! ```text
//!  image-dir/
//!  ├── pages.img         raw bytes: memory pages, pipe contents, unlinked files
//!  ├── tree.img          framed metadata: model::TreeImage (JSON)
//!  ├── descriptors.json  runc-compatible: ["stdin target", "stdout", "stderr"]
//!  └── inventory.img     framed metadata: Inventory (JSON); written LAST, its
//!                        presence marks a complete image
//!
//!  framed metadata file (tree.img, inventory.img), little endian
//!  +----------+---------+---------+-----------+-----------+------------------+
//!  | 0..8     | 8..12   | 12..16  | 16..24    | 24..32    | 32..32+len       |
//!  | magic    | version | kind    | payload   | xxh3-64   | payload (JSON),  |
//!  | STASISMD | u32 = 1 | 1 inv,  | len u64,  | of the    | nothing after it |
//!  |          |         | 2 tree  | <=256 MiB | payload   |                  |
//!  +----------+---------+---------+-----------+-----------+------------------+
//!
//!  pages.img
//!  +---------------------------------------------+ 0
//!  | header page: 0..8 magic "STASISPG",         |
//!  | 8..12 u32 version, 12..16 u32 page size     |
//!  | (4096), 16..24 u64 data length, then zeros  |
//!  +---------------------------------------------+ 4096
//!  | page-aligned raw data, referenced from the  |
//!  | metadata by Blob { off, len, xxh3 }: off is |
//!  | absolute, >= 4096 and a multiple of 4096    |
//!  +---------------------------------------------+ 4096 + data length = file length
//! ```
//!
//! Readers trust nothing: magic, version (newer is refused), kind, exact
//! length (truncated or trailing bytes are errors), size limit (checked
//! before allocating) and checksum are verified before the JSON is decoded;
//! files are opened with `O_NOFOLLOW` and must be regular files. The decoded
//! tree must then pass [`crate::validate::validate`] before restore acts on it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use crate::checksum::of as xxh3_64;

use crate::model::{Blob, TreeImage};

pub const FORMAT_VERSION: u32 = 1;
pub const PAGE_SIZE: u64 = 4096;
/// Largest accepted metadata payload.
pub const MAX_META_PAYLOAD: u64 = 256 << 20;
pub const META_MAGIC: [u8; 8] = *b"STASISMD";
pub const META_HEADER_LEN: u64 = 32;
pub const PAGES_MAGIC: [u8; 8] = *b"STASISPG";
pub const PAGES_FILE: &str = "pages.img";
pub const DESCRIPTORS_FILE: &str = "descriptors.json";
const MAX_DESCRIPTORS_LEN: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    // Causes are part of the messages, not `#[source]`s, so that a chain
    // printer (anyhow's `{:#}`) does not repeat them (as `crate::Error`).
    #[error("{file}: {op}: {cause}")]
    Io {
        file: String,
        op: &'static str,
        cause: std::io::Error,
    },
    #[error("{file}: already exists (refusing to overwrite)")]
    Exists { file: String },
    #[error("{file}: is a symbolic link (refused)")]
    Symlink { file: String },
    #[error("{file}: not a regular file")]
    NotRegular { file: String },
    #[error("{file}: not a directory")]
    NotDirectory { file: String },
    #[error("inventory.img: missing (image incomplete or not a stasis image)")]
    Incomplete,
    #[error("{file}: bad magic (not a stasis image file)")]
    BadMagic { file: String },
    #[error("{file}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        file: String,
        found: u32,
        supported: u32,
    },
    #[error("{file}: wrong kind {found} (expected {expected})")]
    WrongKind {
        file: String,
        expected: u32,
        found: u32,
    },
    #[error("{file}: payload length {len} exceeds the limit of {max} bytes")]
    TooLarge { file: String, len: u64, max: u64 },
    #[error("{file}: truncated: header says {expected} bytes, file has {actual}")]
    Truncated {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: trailing bytes: header says {expected} bytes, file has {actual}")]
    TrailingBytes {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: checksum mismatch (image corrupt)")]
    ChecksumMismatch { file: String },
    #[error("{file}: corrupt header: {what}")]
    BadHeader { file: String, what: String },
    #[error("{file}: malformed: {what}")]
    Malformed { file: String, what: String },
    #[error("{file}: invalid json: {cause}")]
    Json {
        file: String,
        cause: serde_json::Error,
    },
    #[error("pages.img: blob at {off:#x} is not page aligned")]
    BlobUnaligned { off: u64 },
    #[error("pages.img: blob at {off:#x} points into the header page")]
    BlobInHeader { off: u64 },
    #[error("pages.img: blob {off:#x}+{len:#x} overflows")]
    BlobOverflow { off: u64, len: u64 },
    #[error("pages.img: blob {off:#x}+{len:#x} out of bounds (file ends at {end:#x})")]
    BlobOutOfBounds { off: u64, len: u64, end: u64 },
    #[error("pages.img: checksum mismatch for blob {off:#x}+{len:#x} (image corrupt)")]
    BlobChecksum { off: u64, len: u64 },
    #[error("pages.img: reserved space overflows")]
    PagesOverflow,
    #[error("tree.img: invalid image: {0}")]
    Invalid(String),
    #[error("inventory.img: does not match the image: {0}")]
    InventoryMismatch(String),
}

fn io_err(file: &str, op: &'static str, e: std::io::Error) -> ImageError {
    let file = file.to_string();
    match e.raw_os_error() {
        Some(libc::ELOOP) => ImageError::Symlink { file },
        Some(libc::EEXIST) => ImageError::Exists { file },
        _ => ImageError::Io {
            file,
            op,
            cause: e,
        },
    }
}

/// The kinds of framed metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Inventory,
    Tree,
    /// A pre-dump's memory index (`model::PreDumpImage`).
    PreDump,
}

impl MetaKind {
    pub fn file_name(self) -> &'static str {
        match self {
            MetaKind::Inventory => "inventory.img",
            MetaKind::Tree => "tree.img",
            MetaKind::PreDump => "predump.img",
        }
    }
    pub fn code(self) -> u32 {
        match self {
            MetaKind::Inventory => 1,
            MetaKind::Tree => 2,
            MetaKind::PreDump => 3,
        }
    }
}

/// Summary of an image, written last by a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub format_version: u32,
    /// Version of the tool that wrote the image (e.g. "stasis 0.1.0").
    pub tool_version: String,
    /// Unix time (seconds) of the dump.
    pub created: u64,
    pub root_pid: i32,
    pub tasks: u32,
    /// Data length of pages.img (bytes after its header page).
    pub pages_len: u64,
    /// Relative path of the parent image directory (incremental dumps).
    pub parent: Option<String>,
    /// xxh3-64 of tree.img's payload (of predump.img's for a pre-dump).
    pub tree_xxh3: u64,
    /// A pre-dump: memory only (predump.img, no tree.img), not restorable
    /// by itself; a later dump names it with `--parent-path`.
    #[serde(default)]
    pub pre_dump: bool,
}

impl Inventory {
    /// An inventory for `tree`, stamped with the current time and this crate's version.
    pub fn new(tree: &TreeImage, tree_xxh3: u64, pages_len: u64, parent: Option<String>) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Inventory {
            format_version: FORMAT_VERSION,
            tool_version: concat!("stasis ", env!("CARGO_PKG_VERSION")).to_string(),
            created,
            root_pid: tree.root,
            tasks: u32::try_from(tree.tasks.len()).unwrap_or(u32::MAX),
            pages_len,
            parent,
            tree_xxh3,
            pre_dump: false,
        }
    }
}

/// Resolves `parent` (relative to `dir`, as runc requires) to a directory
/// that exists.
pub fn parent_dir(dir: &Path, parent: &str) -> Result<std::path::PathBuf, ImageError> {
    if Path::new(parent).is_absolute() {
        return Err(ImageError::Invalid(format!("parent image path {parent:?} must be relative to the image directory")));
    }
    let p = dir.join(parent);
    if !p.is_dir() {
        return Err(ImageError::Invalid(format!("parent image {} is not a directory", p.display())));
    }
    Ok(p)
}

/// The pages.img of every ancestor of the image in `dir` (parent first),
/// following `inventory.parent` links.
pub fn open_parents(dir: &Path, inv: &Inventory) -> Result<Vec<PagesReader>, ImageError> {
    let mut out = Vec::new();
    let mut cur = dir.to_path_buf();
    let mut next = inv.parent.clone();
    while let Some(rel) = next {
        if out.len() as u32 >= crate::validate::MAX_PARENT_DEPTH {
            return Err(ImageError::Invalid("parent image chain too long (a loop?)".into()));
        }
        cur = parent_dir(&cur, &rel)?;
        let pinv: Inventory = read_meta(&cur, MetaKind::Inventory)?;
        out.push(PagesReader::open(&cur)?);
        next = pinv.parent;
    }
    Ok(out)
}

/// Creates `name` in `dir`: 0600, O_EXCL|O_NOFOLLOW (never overwrites, never follows a link).
fn create_file(dir: &Path, name: &str) -> Result<File, ImageError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(name))
        .map_err(|e| match std::fs::symlink_metadata(dir.join(name)) {
            // O_EXCL reports a planted link as EEXIST: name it for what it is.
            Ok(m) if m.file_type().is_symlink() => ImageError::Symlink { file: name.into() },
            _ => io_err(name, "create", e),
        })?;
    // The umask may have taken bits away; make the mode exact.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err(name, "chmod", e))?;
    Ok(f)
}

/// Opens `name` in `dir` read-only with O_NOFOLLOW (and O_NONBLOCK, so a
/// planted FIFO cannot hang us); refuses anything but a regular file.
/// Returns the file and its length.
fn open_regular(dir: &Path, name: &str) -> Result<(File, u64), ImageError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dir.join(name))
        .map_err(|e| io_err(name, "open", e))?;
    let md = f.metadata().map_err(|e| io_err(name, "stat", e))?;
    if !md.file_type().is_file() {
        return Err(ImageError::NotRegular { file: name.into() });
    }
    Ok((f, md.len()))
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    let name = dir.display().to_string();
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| io_err(&name, "open", e))?;
    d.sync_all().map_err(|e| io_err(&name, "fsync", e))
}

/// Creates the image directory (parents too); an existing directory is
/// accepted only if it is a real directory, not a symlink. Ends mode 0700.
pub fn create_image_dir(path: &Path) -> Result<(), ImageError> {
    let name = path.display().to_string();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| io_err(&parent.display().to_string(), "mkdir", e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(&name, "mkdir", e)),
    }
    // Open without following a link, then chmod through the fd: no race
    // between the check and the chmod.
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => ImageError::Symlink { file: name.clone() },
            Ok(m) if !m.is_dir() => ImageError::NotDirectory { file: name.clone() },
            _ => io_err(&name, "open", e),
        })?;
    d.set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(&name, "chmod", e))
}

#[derive(Debug, Clone, Copy)]
struct MetaHeader {
    len: u64,
    xxh3: u64,
}

fn u32_at(b: &[u8; 32], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(b.get(at..at + 4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8; 32], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(b.get(at..at + 8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(v)
}

/// Checks a framed-metadata header against the expected kind and the total
/// length of the file. Nothing is allocated before this passes.
fn check_meta_header(kind: MetaKind, h: &[u8; 32], total: u64) -> Result<MetaHeader, ImageError> {
    let file = || kind.file_name().to_string();
    if h[..8] != META_MAGIC {
        return Err(ImageError::BadMagic { file: file() });
    }
    let version = u32_at(h, 8);
    if version == 0 || version > FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            file: file(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let found = u32_at(h, 12);
    if found != kind.code() {
        return Err(ImageError::WrongKind {
            file: file(),
            expected: kind.code(),
            found,
        });
    }
    let len = u64_at(h, 16);
    if len > MAX_META_PAYLOAD {
        return Err(ImageError::TooLarge {
            file: file(),
            len,
            max: MAX_META_PAYLOAD,
        });
    }
    let expected = META_HEADER_LEN + len;
    if total < expected {
        return Err(ImageError::Truncated {
            file: file(),
            expected,
            actual: total,
        });
    }
    if total > expected {
        return Err(ImageError::TrailingBytes {
            file: file(),
            expected,
            actual: total,
        });
    }
    Ok(MetaHeader {
        len,
        xxh3: u64_at(h, 24),
    })
}

fn decode_payload<T: DeserializeOwned>(
    kind: MetaKind,
    h: MetaHeader,
    payload: &[u8],
) -> Result<T, ImageError> {
    let file = || kind.file_name().to_string();
    if xxh3_64(payload) != h.xxh3 {
        return Err(ImageError::ChecksumMismatch { file: file() });
    }
    serde_json::from_slice(payload).map_err(|cause| ImageError::Json {
        file: file(),
        cause,
    })
}

/// Errors for a file shorter than a header: bad magic if what is there
/// does not start like the magic, truncated otherwise.
fn short_header(file: &str, magic: &[u8], bytes: &[u8], need: u64) -> ImageError {
    let n = bytes.len().min(magic.len());
    if bytes.get(..n) != magic.get(..n) {
        ImageError::BadMagic { file: file.into() }
    } else {
        ImageError::Truncated {
            file: file.into(),
            expected: need,
            actual: bytes.len() as u64,
        }
    }
}

/// Parses a framed metadata file held in memory. Returns the value and
/// the payload's xxh3.
pub fn decode_meta<T: DeserializeOwned>(
    kind: MetaKind,
    bytes: &[u8],
) -> Result<(T, u64), ImageError> {
    let Some((head, payload)) = bytes.split_first_chunk::<32>() else {
        return Err(short_header(
            kind.file_name(),
            &META_MAGIC,
            bytes,
            META_HEADER_LEN,
        ));
    };
    let h = check_meta_header(kind, head, bytes.len() as u64)?;
    Ok((decode_payload(kind, h, payload)?, h.xxh3))
}

/// Encodes `value` as a framed metadata file in memory.
pub fn encode_meta<T: Serialize>(kind: MetaKind, value: &T) -> Result<(Vec<u8>, u64), ImageError> {
    let payload = serde_json::to_vec(value).map_err(|cause| ImageError::Json {
        file: kind.file_name().into(),
        cause,
    })?;
    let len = payload.len() as u64;
    if len > MAX_META_PAYLOAD {
        return Err(ImageError::TooLarge {
            file: kind.file_name().into(),
            len,
            max: MAX_META_PAYLOAD,
        });
    }
    let sum = xxh3_64(&payload);
    let mut out = Vec::with_capacity(payload.len() + 32);
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok((out, sum))
}

/// Writes a framed metadata file (0600, O_EXCL|O_NOFOLLOW, fsync'd, and the
/// directory fsync'd). Returns the payload's xxh3.
pub fn write_meta<T: Serialize>(dir: &Path, kind: MetaKind, value: &T) -> Result<u64, ImageError> {
    let (bytes, sum) = encode_meta(kind, value)?;
    let name = kind.file_name();
    let mut f = create_file(dir, name)?;
    f.write_all(&bytes).map_err(|e| io_err(name, "write", e))?;
    f.sync_all().map_err(|e| io_err(name, "fsync", e))?;
    sync_dir(dir)?;
    Ok(sum)
}

/// Reads and checks a framed metadata file; returns the value and the
/// payload's xxh3 (compare with `Inventory::tree_xxh3`).
pub fn read_meta_with_sum<T: DeserializeOwned>(
    dir: &Path,
    kind: MetaKind,
) -> Result<(T, u64), ImageError> {
    let name = kind.file_name();
    let (f, total) = open_regular(dir, name)?;
    let mut f = f.take(META_HEADER_LEN);
    let mut head = [0u8; 32];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(name, "read", e)),
        }
    }
    if got < head.len() {
        return Err(short_header(
            name,
            &META_MAGIC,
            &head[..got],
            META_HEADER_LEN,
        ));
    }
    let h = check_meta_header(kind, &head, total)?;
    // The file is exactly 32 + len bytes and len <= MAX_META_PAYLOAD: safe to allocate.
    let mut f = f.into_inner().take(h.len + 1);
    let mut payload = Vec::with_capacity(h.len as usize);
    f.read_to_end(&mut payload)
        .map_err(|e| io_err(name, "read", e))?;
    let actual = META_HEADER_LEN + payload.len() as u64;
    let expected = META_HEADER_LEN + h.len;
    if actual != expected {
        // The file changed under us.
        return Err(if actual < expected {
            ImageError::Truncated {
                file: name.into(),
                expected,
                actual,
            }
        } else {
            ImageError::TrailingBytes {
                file: name.into(),
                expected,
                actual,
            }
        });
    }
    Ok((decode_payload(kind, h, &payload)?, h.xxh3))
}

/// Reads and checks a framed metadata file (opened O_NOFOLLOW, regular files only).
pub fn read_meta<T: DeserializeOwned>(dir: &Path, kind: MetaKind) -> Result<T, ImageError> {
    read_meta_with_sum(dir, kind).map(|(v, _)| v)
}

/// Writes runc's `descriptors.json`: where fds 0, 1 and 2 pointed at dump time.
pub fn write_descriptors_json(dir: &Path, fds: &[String; 3]) -> Result<(), ImageError> {
    let bytes = serde_json::to_vec(fds).map_err(|cause| ImageError::Json {
        file: DESCRIPTORS_FILE.into(),
        cause,
    })?;
    let mut f = create_file(dir, DESCRIPTORS_FILE)?;
    f.write_all(&bytes)
        .map_err(|e| io_err(DESCRIPTORS_FILE, "write", e))?;
    f.sync_all()
        .map_err(|e| io_err(DESCRIPTORS_FILE, "fsync", e))
}

/// Reads `descriptors.json`: a JSON array of exactly 3 strings, nothing else.
pub fn read_descriptors_json(dir: &Path) -> Result<Vec<String>, ImageError> {
    let file = DESCRIPTORS_FILE;
    let (f, len) = open_regular(dir, file)?;
    if len > MAX_DESCRIPTORS_LEN {
        return Err(ImageError::TooLarge {
            file: file.into(),
            len,
            max: MAX_DESCRIPTORS_LEN,
        });
    }
    let mut bytes = Vec::new();
    f.take(MAX_DESCRIPTORS_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(file, "read", e))?;
    let v: Vec<String> = serde_json::from_slice(&bytes).map_err(|cause| ImageError::Json {
        file: file.into(),
        cause,
    })?;
    if v.len() != 3 {
        return Err(ImageError::Malformed {
            file: file.into(),
            what: format!("expected 3 entries, found {}", v.len()),
        });
    }
    if let Some(s) = v.iter().find(|s| s.contains('\0') || s.len() > 4096) {
        return Err(ImageError::Malformed {
            file: file.into(),
            what: format!("bad entry {:?}", s.get(..64).unwrap_or(s)),
        });
    }
    Ok(v)
}

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
    let version = u32_at(h, 8);
    if version == 0 || version > FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            file: file(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let page_size = u32_at(h, 12);
    if u64::from(page_size) != PAGE_SIZE {
        return Err(ImageError::BadHeader {
            file: file(),
            what: format!("page size {page_size}, expected {PAGE_SIZE}"),
        });
    }
    let data_len = u64_at(h, 16);
    if data_len % PAGE_SIZE != 0 {
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
#[derive(Debug)]
pub struct PagesReader {
    file: File,
    map: NonNull<u8>,
    map_len: usize,
    data_len: u64,
}

// SAFETY: the mapping is read-only and owned by the reader until Drop; sharing
// `&[u8]` views of it across threads is as safe as sharing a `&[u8]`.
unsafe impl Send for PagesReader {}
// SAFETY: see Send; no interior mutability.
unsafe impl Sync for PagesReader {}

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
        let too_big = || ImageError::BadHeader {
            file: PAGES_FILE.into(),
            what: format!("file of {file_len} bytes cannot be mapped"),
        };
        let map_len = usize::try_from(file_len).map_err(|_| too_big())?;
        let len = NonZeroUsize::new(map_len).ok_or_else(too_big)?;
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh private read-only mapping of a file we hold open; no
        // existing memory is affected. Its lifetime is tied to `self` (Drop unmaps).
        let p = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file.as_fd(),
                0,
            )
        }
        .map_err(|e| io_err(PAGES_FILE, "mmap", e.into()))?;
        Ok(PagesReader {
            file,
            map: p.cast(),
            map_len,
            data_len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `map` points to `map_len` readable bytes mapped in `open` and
        // unmapped only in Drop, so they outlive `&self`; nothing writes them.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map_len) }
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
            end: self.map_len as u64,
        };
        let start = usize::try_from(blob.off).map_err(|_| oob())?;
        let end = usize::try_from(blob.off + blob.len).map_err(|_| oob())?; // no overflow: check_blob
        self.bytes().get(start..end).ok_or_else(oob)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for PagesReader {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no slice borrowed
        // from it can outlive `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.map.cast(), self.map_len) };
    }
}

/// Opens a complete image: inventory, tree and pages, cross-checked and
/// validated. What restore and `stasis inspect` start from.
pub fn open_image(dir: &Path) -> Result<(Inventory, TreeImage, PagesReader), ImageError> {
    let inv: Inventory = match read_meta(dir, MetaKind::Inventory) {
        Err(ImageError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::Incomplete)
        }
        r => r?,
    };
    if inv.format_version == 0 || inv.format_version > FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            file: "inventory.img".into(),
            found: inv.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let (tree, sum) = read_meta_with_sum::<TreeImage>(dir, MetaKind::Tree)?;
    let pages = PagesReader::open(dir)?;
    crate::validate::check_inventory(&inv, &tree, sum, pages.data_len())?;
    crate::validate::validate(&tree, pages.data_len())?;
    Ok((inv, tree, pages))
}

/// Fuzzing entry point: parses a framed metadata file from memory, then
/// validates and describes what decodes. Never panics. The payload is also
/// decoded without its checksum so a fuzzer can reach the validator.
pub fn fuzz_decode(bytes: &[u8]) {
    let kind = bytes.get(12..16).map(|k| k == 1u32.to_le_bytes());
    if kind == Some(true) {
        let _ = decode_meta::<Inventory>(MetaKind::Inventory, bytes);
        return;
    }
    let inv = Inventory::default();
    let check = |tree: &TreeImage| {
        let _ = crate::validate::validate(tree, 1 << 40);
        let _ = crate::inspect::describe(tree, &inv);
        let _ = crate::inspect::describe_json(tree, &inv);
    };
    if let Ok((tree, _)) = decode_meta::<TreeImage>(MetaKind::Tree, bytes) {
        check(&tree);
    }
    if let Ok(tree) = serde_json::from_slice::<TreeImage>(bytes.get(32..).unwrap_or(bytes)) {
        check(&tree);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::{sample_tree, PAGES_LEN};
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    /// A unique temp directory, removed on drop.
    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "stasis-image-test-{}-{tag}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            create_image_dir(&p).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn put(dir: &Path, name: &str, bytes: &[u8]) {
        let _ = std::fs::remove_file(dir.join(name));
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn tree_bytes() -> Vec<u8> {
        encode_meta(MetaKind::Tree, &sample_tree()).unwrap().0
    }

    fn read_tree(dir: &Path) -> Result<TreeImage, ImageError> {
        read_meta::<TreeImage>(dir, MetaKind::Tree)
    }

    fn json(t: &TreeImage) -> serde_json::Value {
        serde_json::to_value(t).unwrap()
    }

    #[test]
    fn meta_round_trip() {
        let d = Tmp::new("meta");
        let tree = sample_tree();
        let sum = write_meta(&d.0, MetaKind::Tree, &tree).unwrap();
        let (back, sum2) = read_meta_with_sum::<TreeImage>(&d.0, MetaKind::Tree).unwrap();
        assert_eq!((json(&back), sum2), (json(&tree), sum));
        assert_eq!(
            std::fs::metadata(d.0.join("tree.img")).unwrap().mode() & 0o7777,
            0o600
        );
        let inv = Inventory::new(&tree, sum, PAGES_LEN, None);
        write_meta(&d.0, MetaKind::Inventory, &inv).unwrap();
        assert_eq!(
            read_meta::<Inventory>(&d.0, MetaKind::Inventory).unwrap(),
            inv
        );
        // Existing files are never overwritten.
        assert!(matches!(
            write_meta(&d.0, MetaKind::Tree, &TreeImage::default()),
            Err(ImageError::Exists { .. })
        ));
        assert_eq!(json(&read_tree(&d.0).unwrap()), json(&tree));
    }

    #[test]
    fn meta_refusals() {
        let d = Tmp::new("refuse");
        let good = tree_bytes();
        let check = |bytes: &[u8], want: fn(&ImageError) -> bool, msg: &str| {
            put(&d.0, "tree.img", bytes);
            let e = read_tree(&d.0).unwrap_err();
            assert!(want(&e) && e.to_string().contains(msg), "got {e}");
            let e2 = decode_meta::<TreeImage>(MetaKind::Tree, bytes).unwrap_err();
            assert_eq!(e2.to_string(), e.to_string());
        };
        let mut b = good.clone();
        b[0] = b'X';
        check(
            &b,
            |e| matches!(e, ImageError::BadMagic { .. }),
            "tree.img: bad magic",
        );
        let mut b = good.clone();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        check(
            &b,
            |e| matches!(e, ImageError::UnsupportedVersion { found: 2, .. }),
            "version 2",
        );
        let inv = encode_meta(MetaKind::Inventory, &Inventory::default())
            .unwrap()
            .0;
        check(
            &inv,
            |e| {
                matches!(
                    e,
                    ImageError::WrongKind {
                        found: 1,
                        expected: 2,
                        ..
                    }
                )
            },
            "wrong kind 1",
        );
        let n = good.len() as u64;
        check(
            &good[..good.len() - 1],
            |e| matches!(e, ImageError::Truncated { .. }),
            &format!(
                "tree.img: truncated: header says {n} bytes, file has {}",
                n - 1
            ),
        );
        let mut b = good.clone();
        b.push(b' ');
        check(
            &b,
            |e| matches!(e, ImageError::TrailingBytes { .. }),
            "trailing bytes",
        );
        let mut b = good.clone();
        b[40] ^= 1;
        check(
            &b,
            |e| matches!(e, ImageError::ChecksumMismatch { .. }),
            "tree.img: checksum mismatch (image corrupt)",
        );
        for len in [MAX_META_PAYLOAD + 1, u64::MAX] {
            let mut b = good.clone();
            b[16..24].copy_from_slice(&len.to_le_bytes());
            check(
                &b,
                |e| matches!(e, ImageError::TooLarge { .. }),
                "exceeds the limit",
            );
        }
        // Within the limit but far beyond the file: refused before allocating.
        let mut b = good.clone();
        b[16..24].copy_from_slice(&MAX_META_PAYLOAD.to_le_bytes());
        check(
            &b,
            |e| matches!(e, ImageError::Truncated { .. }),
            "truncated",
        );
        check(
            &good[..10],
            |e| {
                matches!(
                    e,
                    ImageError::Truncated {
                        expected: 32,
                        actual: 10,
                        ..
                    }
                )
            },
            "truncated",
        );
        check(
            b"",
            |e| matches!(e, ImageError::Truncated { .. }),
            "truncated",
        );
        check(
            b"{}",
            |e| matches!(e, ImageError::BadMagic { .. }),
            "bad magic",
        );
        // Valid frame, payload not a TreeImage.
        let (b, _) = encode_meta(MetaKind::Tree, &vec![1, 2]).unwrap();
        check(
            &b,
            |e| matches!(e, ImageError::Json { .. }),
            "tree.img: invalid json",
        );
    }

    #[test]
    fn refuses_links_and_special_files() {
        let d = Tmp::new("links");
        let target = d.0.join("elsewhere");
        std::fs::write(&target, tree_bytes()).unwrap();
        std::os::unix::fs::symlink(&target, d.0.join("tree.img")).unwrap();
        let e = read_tree(&d.0).unwrap_err();
        assert!(matches!(e, ImageError::Symlink { .. }), "{e}");
        assert_eq!(e.to_string(), "tree.img: is a symbolic link (refused)");
        // Writing through the link neither follows nor replaces it.
        assert!(matches!(
            write_meta(&d.0, MetaKind::Tree, &sample_tree()),
            Err(ImageError::Symlink { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), tree_bytes());
        let dangling = Tmp::new("dangling");
        std::os::unix::fs::symlink(dangling.0.join("nowhere"), dangling.0.join("tree.img"))
            .unwrap();
        assert!(write_meta(&dangling.0, MetaKind::Tree, &sample_tree()).is_err());
        assert!(!dangling.0.join("nowhere").exists());
        std::fs::remove_file(d.0.join("tree.img")).unwrap();
        std::fs::create_dir(d.0.join("tree.img")).unwrap();
        assert!(matches!(
            read_tree(&d.0),
            Err(ImageError::NotRegular { .. })
        ));
        let fifo = std::ffi::CString::new(
            d.0.join("inventory.img")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_meta::<Inventory>(&d.0, MetaKind::Inventory),
            Err(ImageError::NotRegular { .. })
        ));
        assert!(matches!(
            read_meta::<Inventory>(&dangling.0, MetaKind::Inventory),
            Err(ImageError::Io { .. })
        ));
    }

    #[test]
    fn bit_flips_never_panic() {
        let good = tree_bytes();
        let want = json(&sample_tree());
        let mut b = good.clone();
        for i in 0..b.len() {
            for bit in 0..8 {
                b[i] ^= 1 << bit;
                match decode_meta::<TreeImage>(MetaKind::Tree, &b) {
                    Err(_) => {}
                    Ok((t, _)) => assert_eq!(json(&t), want, "flip of byte {i} bit {bit} accepted"),
                }
                // With the checksum recomputed, the JSON decoder and the
                // validator see the corruption: they must not panic either.
                if i >= 32 && [0, 1, 5].contains(&bit) {
                    fuzz_decode(&b);
                    let sum = xxh3_64(&b[32..]);
                    let mut c = b.clone();
                    c[24..32].copy_from_slice(&sum.to_le_bytes());
                    if let Ok((t, _)) = decode_meta::<TreeImage>(MetaKind::Tree, &c) {
                        let _ = crate::validate::validate(&t, PAGES_LEN);
                    }
                }
                b[i] ^= 1 << bit;
            }
        }
        assert_eq!(b, good);
        for cut in 0..good.len() {
            fuzz_decode(&good[..cut]);
        }
    }

    fn write_pages(dir: &Path, chunks: &[Vec<u8>]) -> (Vec<Blob>, u64) {
        let w = PagesWriter::create(dir).unwrap();
        let blobs = std::thread::scope(|s| {
            let hs: Vec<_> = chunks
                .iter()
                .map(|c| {
                    let w = &w;
                    s.spawn(move || {
                        let off = w.reserve(c.len() as u64);
                        w.file().write_all_at(c, off).unwrap();
                        blob_for(off, c)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        (blobs, w.finish().unwrap())
    }

    #[test]
    fn pages_round_trip() {
        let d = Tmp::new("pages");
        let chunks: Vec<Vec<u8>> = (0..8u8)
            .map(|i| vec![i; 1000 * usize::from(i) + 1])
            .chain([vec![]])
            .collect();
        let (blobs, len) = write_pages(&d.0, &chunks);
        assert_eq!(
            len,
            (0..8)
                .map(|i: u64| (1000 * i + 1).div_ceil(PAGE_SIZE) * PAGE_SIZE)
                .sum::<u64>()
        );
        assert_eq!(
            std::fs::metadata(d.0.join(PAGES_FILE)).unwrap().len(),
            PAGE_SIZE + len
        );
        let r = PagesReader::open(&d.0).unwrap();
        assert_eq!(r.data_len(), len);
        for (b, c) in blobs.iter().zip(&chunks) {
            assert!(b.off >= PAGE_SIZE && b.off % PAGE_SIZE == 0);
            assert_eq!(r.get(b).unwrap(), &c[..]);
        }
        assert!(r.fd().as_fd().try_clone_to_owned().is_ok());
        assert!(matches!(
            PagesWriter::create(&d.0),
            Err(ImageError::Exists { .. })
        ));
        // Blob refusals.
        let b = blobs[1];
        let e = |blob: Blob| r.get(&blob).unwrap_err();
        assert!(matches!(
            e(Blob {
                off: b.off + 1,
                ..b
            }),
            ImageError::BlobUnaligned { .. }
        ));
        assert!(matches!(
            e(Blob { off: 0, ..b }),
            ImageError::BlobInHeader { .. }
        ));
        assert!(matches!(
            e(Blob {
                off: PAGE_SIZE + len,
                len: 1,
                ..b
            }),
            ImageError::BlobOutOfBounds { .. }
        ));
        assert!(matches!(
            e(Blob { len: u64::MAX, ..b }),
            ImageError::BlobOverflow { .. }
        ));
        assert!(matches!(
            e(Blob {
                off: !0xfff,
                len: 8192,
                ..b
            }),
            ImageError::BlobOverflow { .. }
        ));
        let bad = e(Blob {
            xxh3: b.xxh3 ^ 1,
            ..b
        });
        assert!(
            matches!(bad, ImageError::BlobChecksum { .. })
                && bad.to_string().contains("checksum mismatch")
        );
        assert!(r
            .get_unchecked_sum(&Blob {
                xxh3: b.xxh3 ^ 1,
                ..b
            })
            .is_ok());
    }

    #[test]
    fn dump_outputs_are_private_and_never_overwritten() {
        let d = Tmp::new("outputs");
        let (_, len) = write_pages(&d.0, &[vec![3; 100]]);
        let tree = sample_tree();
        let sum = write_meta(&d.0, MetaKind::Tree, &tree).unwrap();
        write_meta(&d.0, MetaKind::Inventory, &Inventory::new(&tree, sum, len, None)).unwrap();
        for f in [PAGES_FILE, "tree.img", "inventory.img"] {
            let md = std::fs::symlink_metadata(d.0.join(f)).unwrap();
            assert!(md.file_type().is_file(), "{f}");
            assert_eq!(md.mode() & 0o7777, 0o600, "{f}");
        }
        assert_eq!(std::fs::metadata(&d.0).unwrap().mode() & 0o7777, 0o700);
        // Each existing file alone makes a new dump refuse to start, and
        // nothing already there is changed.
        for f in [PAGES_FILE, "tree.img", "inventory.img"] {
            let e = Tmp::new("exists");
            put(&e.0, f, b"precious");
            let err = PagesWriter::create(&e.0).unwrap_err();
            assert!(matches!(err, ImageError::Exists { .. }), "{f}: {err}");
            assert_eq!(err.to_string(), format!("{f}: already exists (refusing to overwrite)"));
            assert_eq!(std::fs::read(e.0.join(f)).unwrap(), b"precious");
            let names: Vec<_> = std::fs::read_dir(&e.0).unwrap().map(|x| x.unwrap().file_name()).collect();
            assert_eq!(names, [std::ffi::OsString::from(f)], "{f}");
        }
        // A planted link, dangling or not, is neither followed nor replaced.
        let target = Tmp::new("target");
        for f in [PAGES_FILE, "tree.img", "inventory.img"] {
            for to in [target.0.join("victim"), target.0.join("nowhere")] {
                let e = Tmp::new("link");
                std::fs::write(target.0.join("victim"), b"victim").unwrap();
                std::os::unix::fs::symlink(&to, e.0.join(f)).unwrap();
                let err = PagesWriter::create(&e.0).unwrap_err();
                assert!(matches!(err, ImageError::Symlink { .. }), "{f}: {err}");
                assert_eq!(err.to_string(), format!("{f}: is a symbolic link (refused)"));
                assert_eq!(std::fs::read(target.0.join("victim")).unwrap(), b"victim");
                assert!(!target.0.join("nowhere").exists());
                assert!(std::fs::symlink_metadata(e.0.join(f)).unwrap().file_type().is_symlink());
            }
        }
    }

    #[test]
    fn pages_writer_overflow() {
        let d = Tmp::new("overflow");
        let w = PagesWriter::create(&d.0).unwrap();
        assert_eq!(w.reserve(1), PAGE_SIZE);
        assert_eq!(w.reserve(u64::MAX) % PAGE_SIZE, 0);
        assert!(matches!(w.finish(), Err(ImageError::PagesOverflow)));
    }

    #[test]
    fn pages_refusals() {
        let d = Tmp::new("pagesbad");
        let (_, len) = write_pages(&d.0, &[vec![7; 5000]]);
        let good = std::fs::read(d.0.join(PAGES_FILE)).unwrap();
        let check = |bytes: &[u8], msg: &str| {
            put(&d.0, PAGES_FILE, bytes);
            let e = PagesReader::open(&d.0).unwrap_err().to_string();
            assert!(e.contains(msg), "{e:?} lacks {msg:?}");
        };
        let mut b = good.clone();
        b[1] = 0;
        check(&b, "pages.img: bad magic");
        let mut b = good.clone();
        b[8] = 9;
        check(&b, "unsupported format version 9");
        let mut b = good.clone();
        b[13] = 0x20;
        check(&b, "corrupt header: page size 8192");
        let mut b = good.clone();
        b[16] = 1;
        check(&b, "not page aligned");
        let mut b = good.clone();
        b[4095] = 1;
        check(&b, "reserved bytes are not zero");
        let mut b = good.clone();
        b[16..24].copy_from_slice(&(!0xfffu64).to_le_bytes());
        check(&b, "overflows");
        check(
            &good[..good.len() - 4096],
            &format!(
                "pages.img: truncated: header says {len} bytes, file has {}",
                len - 4096
            ),
        );
        check(&[&good[..], &[0u8; 4096]].concat(), "trailing bytes");
        check(&good[..100], "truncated");
        check(&[0u8; 4096], "bad magic"); // unfinished writer
        std::fs::remove_file(d.0.join(PAGES_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.0.join(PAGES_FILE)).unwrap();
        assert!(matches!(
            PagesReader::open(&d.0),
            Err(ImageError::Symlink { .. })
        ));
    }

    #[test]
    fn image_dir() {
        let d = Tmp::new("dir");
        let nested = d.0.join("a/b/img");
        create_image_dir(&nested).unwrap();
        assert_eq!(std::fs::metadata(&nested).unwrap().mode() & 0o7777, 0o700);
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_image_dir(&nested).unwrap();
        assert_eq!(std::fs::metadata(&nested).unwrap().mode() & 0o7777, 0o700);
        std::os::unix::fs::symlink(&nested, d.0.join("link")).unwrap();
        assert!(matches!(
            create_image_dir(&d.0.join("link")),
            Err(ImageError::Symlink { .. })
        ));
        std::fs::write(d.0.join("file"), b"").unwrap();
        assert!(matches!(
            create_image_dir(&d.0.join("file")),
            Err(ImageError::NotDirectory { .. })
        ));
    }

    #[test]
    fn descriptors() {
        let d = Tmp::new("desc");
        let fds = [
            "/dev/null".to_string(),
            "pipe:[123]".into(),
            "pipe:[124]".into(),
        ];
        write_descriptors_json(&d.0, &fds).unwrap();
        assert_eq!(read_descriptors_json(&d.0).unwrap(), fds);
        assert!(matches!(
            write_descriptors_json(&d.0, &fds),
            Err(ImageError::Exists { .. })
        ));
        for (bad, msg) in [
            (&b"[\"a\",\"b\"]"[..], "expected 3 entries"),
            (b"{\"a\":1}", "invalid json"),
            (b"[\"a\",\"b\",\"c\",\"d\"]", "found 4"),
            (b"[\"a\",\"b\",\"\\u0000\"]", "bad entry"),
        ] {
            put(&d.0, DESCRIPTORS_FILE, bad);
            let e = read_descriptors_json(&d.0).unwrap_err().to_string();
            assert!(
                e.starts_with("descriptors.json: ") && e.contains(msg),
                "{e}"
            );
        }
    }

    #[test]
    fn open_whole_image() {
        let d = Tmp::new("whole");
        let (_, len) = write_pages(&d.0, &[vec![1; PAGES_LEN as usize]]);
        assert_eq!(len, PAGES_LEN);
        assert!(matches!(open_image(&d.0), Err(ImageError::Incomplete)));
        let tree = sample_tree();
        let sum = write_meta(&d.0, MetaKind::Tree, &tree).unwrap();
        write_meta(
            &d.0,
            MetaKind::Inventory,
            &Inventory::new(&tree, sum, len, None),
        )
        .unwrap();
        let (inv, back, pages) = open_image(&d.0).unwrap();
        assert_eq!(
            (inv.root_pid, inv.tasks, back.tasks.len(), pages.data_len()),
            (1, 3, 3, PAGES_LEN)
        );
        std::fs::remove_file(d.0.join("inventory.img")).unwrap();
        write_meta(
            &d.0,
            MetaKind::Inventory,
            &Inventory::new(&tree, sum ^ 1, len, None),
        )
        .unwrap();
        assert!(matches!(
            open_image(&d.0),
            Err(ImageError::InventoryMismatch(_))
        ));
    }
}
