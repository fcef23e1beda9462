//! Small fixed-shape records that every task carries many of (64 signal
//! actions, 16 resource limits) are written in `tree.img` as arrays of
//! their fields in declaration order (format version 2): a default signal
//! action is `[0,0,0,0]` instead of
//! `{"handler":0,"flags":0,"restorer":0,"mask":0}`. Version 1 wrote them
//! as objects, which a reader still takes.
//!
//! `compact_record!` implements both directions for a struct of plain
//! fields; an array must have exactly as many elements as the struct has
//! fields.

macro_rules! compact_record {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple([$(stringify!($field)),+].len())?;
                $(t.serialize_element(&self.$field)?;)+
                t.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(f, "{} as an array of {} fields (or, in format version 1, an object)",
                            stringify!($ty), [$(stringify!($field)),+].len())
                    }

                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$ty, A::Error> {
                        let mut i = 0;
                        $(
                            let $field = seq
                                .next_element()?
                                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                            i += 1;
                        )+
                        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                            return Err(serde::de::Error::invalid_length(i + 1, &self));
                        }
                        Ok($ty { $($field),+ })
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)+
                        while let Some(key) = map.next_key::<String>()? {
                            match key.as_str() {
                                $(stringify!($field) => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field(stringify!($field)));
                                    }
                                    $field = Some(map.next_value()?);
                                })+
                                _ => {
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok($ty {
                            $($field: $field.ok_or_else(|| serde::de::Error::missing_field(stringify!($field)))?),+
                        })
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

pub(crate) use compact_record;

#[cfg(test)]
mod tests {
    use crate::model::{Rlimit, SigAction};

    #[test]
    fn arrays_round_trip() {
        let a = SigAction { handler: 0x401000, flags: 0x4000000, restorer: 7, mask: u64::MAX };
        let js = serde_json::to_string(&a).unwrap();
        assert_eq!(js, "[4198400,67108864,7,18446744073709551615]");
        let b: SigAction = serde_json::from_str(&js).unwrap();
        assert_eq!((b.handler, b.flags, b.restorer, b.mask), (a.handler, a.flags, a.restorer, a.mask));
        let r = Rlimit { resource: 7, cur: 1024, max: u64::MAX };
        assert_eq!(serde_json::to_string(&r).unwrap(), "[7,1024,18446744073709551615]");
    }

    #[test]
    fn version_1_objects_still_read() {
        let a: SigAction = serde_json::from_str(r#"{"handler":1,"flags":2,"restorer":3,"mask":4}"#).unwrap();
        assert_eq!((a.handler, a.flags, a.restorer, a.mask), (1, 2, 3, 4));
        let r: Rlimit = serde_json::from_str(r#"{"resource":7,"cur":1,"max":2}"#).unwrap();
        assert_eq!((r.resource, r.cur, r.max), (7, 1, 2));
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            "[1,2,3]",
            "[1,2,3,4,5]",
            "[1,2,3,-4]",
            "[1,2,3,\"4\"]",
            r#"{"handler":1,"flags":2,"restorer":3}"#,
            r#"{"handler":1,"handler":1,"flags":2,"restorer":3,"mask":4}"#,
            "7",
            "null",
        ] {
            assert!(serde_json::from_str::<SigAction>(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Rlimit>("[4294967296,1,2]").is_err());
    }
}
