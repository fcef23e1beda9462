//! How raw byte buffers of the model (xsave areas, siginfo, seccomp
//! programs, SysV message texts) are written in `tree.img`'s JSON: as
//! base64 strings (format version 2). Version 1 wrote them as arrays of
//! numbers, which a reader still takes.
//!
//! A thread's xsave area is ~2.4 KB: as numbers it was ~5 KB of JSON and
//! 40% of a task's entry, parsed number by number; as base64 it is 3.2 KB,
//! and tree800's restore went from 0.56-0.66 s to 0.54-0.61 s.
//!
//! Use with `#[serde(with = "crate::image::bytes")]` on a `Vec<u8>`, or
//! `crate::image::bytes::list` on a `Vec<Vec<u8>>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use std::fmt;

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base64 string (or, in format version 1, an array of bytes)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        STANDARD.decode(v).map_err(|e| E::custom(format!("bad base64: {e}")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// The same for a list of buffers.
pub mod list {
    use super::*;

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for bytes in list {
            seq.serialize_element(&STANDARD.encode(bytes))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        d.deserialize_seq(ListVisitor)
    }

    struct ListVisitor;

    struct Item(Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Item, D::Error> {
            super::deserialize(d).map(Item)
        }
    }

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<Vec<u8>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of byte buffers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Vec<u8>>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 10));
            while let Some(Item(b)) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        one: Vec<u8>,
        #[serde(with = "super::list", default)]
        many: Vec<Vec<u8>>,
    }

    #[test]
    fn base64_round_trip() {
        let t = T { one: (0..=255).collect(), many: vec![vec![], vec![0, 1, 2], vec![255; 128]] };
        let js = serde_json::to_string(&t).unwrap();
        assert!(js.starts_with("{\"one\":\"AAECAwQF"), "{js}");
        assert_eq!(serde_json::from_str::<T>(&js).unwrap(), t);
    }

    #[test]
    fn version_1_arrays_still_read() {
        let t: T = serde_json::from_str(r#"{"one":[1,2,255],"many":[[7],[]]}"#).unwrap();
        assert_eq!(t, T { one: vec![1, 2, 255], many: vec![vec![7], vec![]] });
    }

    #[test]
    fn bad_input_is_refused() {
        for bad in [
            r#"{"one":"not base64!","many":[]}"#,
            r#"{"one":[256],"many":[]}"#,
            r#"{"one":[-1],"many":[]}"#,
            r#"{"one":7,"many":[]}"#,
            r#"{"one":"","many":"AAAA"}"#,
            r#"{"one":"","many":[7]}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }
}
