use super::pages::*;
use crate::model::Blob;
use super::*;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use crate::validate::fixtures::{sample_tree, PAGES_LEN};
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
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    check(
        &b,
        |e| matches!(e, ImageError::UnsupportedVersion { found, .. } if *found == FORMAT_VERSION + 1),
        &format!("version {}", FORMAT_VERSION + 1),
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

/// Images of format version 1 (byte buffers as arrays of numbers) still
/// decode, to the same buffers a version 2 image writes as base64; the
/// seed is a real version 1 dump (`checkpoint/fuzz/seeds`).
#[test]
fn version_1_images_still_read() {
    let v1 = include_bytes!("../../fuzz/seeds/shm_kinds-tree.img");
    assert_eq!(u32::from_le_bytes(v1[8..12].try_into().unwrap()), 1);
    let (tree, sum) = decode_meta::<TreeImage>(MetaKind::Tree, v1).unwrap();
    let inv = include_bytes!("../../fuzz/seeds/shm_kinds-inventory.img");
    let (inv, _) = decode_meta::<Inventory>(MetaKind::Inventory, inv).unwrap();
    assert_eq!(inv.format_version, 1);
    crate::validate::check_inventory(&inv, &tree, sum, inv.pages_len).unwrap();
    crate::validate::validate(&tree, inv.pages_len).unwrap();
    let xsave = &tree.tasks[0].threads[0].xsave;
    assert!(xsave.len() >= 576, "xsave of {} bytes", xsave.len());
    let text = std::str::from_utf8(&v1[32..]).unwrap();
    assert!(text.contains("\"xsave\":[") && !text.contains("\"xsave\":\""));
    // Written again, it is version 2 with base64 buffers, and reads back the same.
    let (v2, _) = encode_meta(MetaKind::Tree, &tree).unwrap();
    assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), FORMAT_VERSION);
    let text = std::str::from_utf8(&v2[32..]).unwrap();
    assert!(text.contains("\"xsave\":\"") && !text.contains("\"xsave\":["));
    assert!(text.contains("\"sigactions\":[[0,0,0,0],") && !text.contains("\"handler\""));
    assert!(v2.len() < v1.len(), "{} bytes against {}", v2.len(), v1.len());
    let (back, _) = decode_meta::<TreeImage>(MetaKind::Tree, &v2).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&tree).unwrap());
}
