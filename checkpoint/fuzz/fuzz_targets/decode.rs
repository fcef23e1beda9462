//! The image decoder on arbitrary bytes: framed metadata (tree.img,
//! inventory.img), the JSON payload without its frame, the validator and
//! `stasis inspect`'s rendering. It must refuse, never panic or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stasis_checkpoint::image::fuzz_decode(data);
});
