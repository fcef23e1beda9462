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
//!  | STASISMD | u32 = 2 | 1 inv,  | len u64,  | of the    | nothing after it |
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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use crate::checksum::of as xxh3_64;

use crate::model::TreeImage;

pub mod bytes;
pub(crate) mod compact;
mod pages;
pub use pages::{blob_for, check_blob, PagesReader, PagesWriter};

/// 2: byte buffers in `tree.img` as base64 strings (`bytes`), signal
/// actions and resource limits as arrays (`compact`); 1 wrote them as
/// arrays of numbers and as objects. Both are read.
pub const FORMAT_VERSION: u32 = 2;
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

/// The format version at bytes 8..12 of either kind of header: 1 up to
/// the newest this build writes.
fn check_version(h: &[u8; 32], file: &str) -> Result<(), ImageError> {
    let version = u32_at(h, 8);
    if version == 0 || version > FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            file: file.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Checks a framed-metadata header against the expected kind and the total
/// length of the file. Nothing is allocated before this passes.
fn check_meta_header(kind: MetaKind, h: &[u8; 32], total: u64) -> Result<MetaHeader, ImageError> {
    let file = || kind.file_name().to_string();
    if h[..8] != META_MAGIC {
        return Err(ImageError::BadMagic { file: file() });
    }
    check_version(h, &file())?;
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
mod tests;
