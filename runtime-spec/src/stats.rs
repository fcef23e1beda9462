//! `stats-dump` and `stats-restore` in CRIU's stats image format, which
//! podman (`--print-stats`), checkpointctl and containerd 2.1–2.3 read:
//!
//! ```text
//! u32 LE 0x55105940   IMG_SERVICE magic
//! u32 LE 0x57093306   STATS magic
//! u32 LE N            payload size
//! N bytes             protobuf stats_entry { dump_stats_entry dump = 1;
//!                                            restore_stats_entry restore = 2; }
//! ```
//!
//! Field numbers are those of CRIU's `images/stats.proto`. All of them are
//! proto2 `required` scalars except the noted ones, so every required field
//! is written, zeros included. The encoding is done by hand: varints and
//! one length-delimited sub-message.

use std::path::Path;

const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
const STATS_MAGIC: u32 = 0x5709_3306;

pub const DUMP_FILE: &str = "stats-dump";
pub const RESTORE_FILE: &str = "stats-restore";

/// `dump_stats_entry`; times in microseconds, as CRIU records them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub freezing_time: u32,
    pub frozen_time: u32,
    pub memdump_time: u32,
    pub memwrite_time: u32,
    pub pages_scanned: u64,
    pub pages_skipped_parent: u64,
    pub pages_written: u64,
    pub pages_lazy: u64,
}

/// `restore_stats_entry`; times in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub pages_compared: u64,
    pub pages_skipped_cow: u64,
    pub forking_time: u32,
    pub restore_time: u32,
    pub pages_restored: u64,
}

/// Microseconds, saturated into the format's u32 time fields.
pub fn us32(us: u64) -> u32 {
    u32::try_from(us).unwrap_or(u32::MAX)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field (wire type 0).
fn field(out: &mut Vec<u8>, number: u32, v: u64) {
    varint(out, u64::from(number) << 3);
    varint(out, v);
}

/// A sub-message field (wire type 2).
fn message(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    varint(out, (u64::from(number) << 3) | 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

impl DumpStats {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        field(&mut b, 1, self.freezing_time.into());
        field(&mut b, 2, self.frozen_time.into());
        field(&mut b, 3, self.memdump_time.into());
        field(&mut b, 4, self.memwrite_time.into());
        field(&mut b, 5, self.pages_scanned);
        field(&mut b, 6, self.pages_skipped_parent);
        field(&mut b, 7, self.pages_written);
        // 8 (irmap_resolve) is optional and has no meaning here.
        field(&mut b, 9, self.pages_lazy);
        b
    }
}

impl RestoreStats {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        field(&mut b, 1, self.pages_compared);
        field(&mut b, 2, self.pages_skipped_cow);
        field(&mut b, 3, self.forking_time.into());
        field(&mut b, 4, self.restore_time.into());
        field(&mut b, 5, self.pages_restored);
        b
    }
}

/// The whole file: magics, size, `stats_entry`.
fn image(entry_field: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    message(&mut payload, entry_field, body);
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
    out.extend_from_slice(&STATS_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub fn encode_dump(s: &DumpStats) -> Vec<u8> {
    image(1, &s.encode())
}

pub fn encode_restore(s: &RestoreStats) -> Vec<u8> {
    image(2, &s.encode())
}

/// Writes `<dir>/stats-dump`.
pub fn write_dump(dir: &Path, s: &DumpStats) -> std::io::Result<()> {
    std::fs::write(dir.join(DUMP_FILE), encode_dump(s))
}

/// Writes `<dir>/stats-restore`.
pub fn write_restore(dir: &Path, s: &RestoreStats) -> std::io::Result<()> {
    std::fs::write(dir.join(RESTORE_FILE), encode_restore(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal protobuf reader for the test: (field number, wire type, value or bytes).
    fn read_varint(b: &[u8], i: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(b: &[u8]) -> Vec<(u64, u64)> {
        let mut i = 0;
        let mut out = Vec::new();
        while i < b.len() {
            let key = read_varint(b, &mut i);
            assert_eq!(key & 7, 0, "only varints inside the entries");
            out.push((key >> 3, read_varint(b, &mut i)));
        }
        out
    }

    fn split(file: &[u8]) -> (u64, Vec<u8>) {
        assert_eq!(
            u32::from_le_bytes(file[0..4].try_into().unwrap()),
            0x5510_5940
        );
        assert_eq!(
            u32::from_le_bytes(file[4..8].try_into().unwrap()),
            0x5709_3306
        );
        let n = u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
        assert_eq!(file.len(), 12 + n);
        let payload = &file[12..];
        let mut i = 0;
        let key = read_varint(payload, &mut i);
        assert_eq!(key & 7, 2);
        let len = read_varint(payload, &mut i) as usize;
        assert_eq!(i + len, payload.len());
        (key >> 3, payload[i..].to_vec())
    }

    #[test]
    fn varints_match_protobuf() {
        let enc = |v| {
            let mut b = Vec::new();
            varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }

    #[test]
    fn dump_stats_layout() {
        let s = DumpStats {
            freezing_time: 10,
            frozen_time: 200_000,
            memdump_time: 3,
            memwrite_time: 4,
            pages_scanned: 65536,
            pages_written: 65536,
            ..Default::default()
        };
        let (entry, body) = split(&encode_dump(&s));
        assert_eq!(entry, 1);
        assert_eq!(
            fields(&body),
            [
                (1, 10),
                (2, 200_000),
                (3, 3),
                (4, 4),
                (5, 65536),
                (6, 0),
                (7, 65536),
                (9, 0)
            ]
        );
    }

    #[test]
    fn restore_stats_layout() {
        let s = RestoreStats {
            forking_time: 7,
            restore_time: 80_000,
            pages_restored: 123,
            ..Default::default()
        };
        let (entry, body) = split(&encode_restore(&s));
        assert_eq!(entry, 2);
        assert_eq!(
            fields(&body),
            [(1, 0), (2, 0), (3, 7), (4, 80_000), (5, 123)]
        );
    }

    #[test]
    fn times_saturate() {
        assert_eq!(us32(5), 5);
        assert_eq!(us32(u64::MAX), u32::MAX);
    }
}
