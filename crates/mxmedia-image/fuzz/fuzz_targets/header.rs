//! Every reader of an image's structure on arbitrary bytes: the format sniffer, the JPEG marker,
//! PNG chunk, GIF block and WebP chunk walkers, the decoders' header readers, and the cost checks.
//! Runs them unguarded, so a panic is a crash here rather than a `Corrupt` answer.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mxmedia_image::fuzz_header(data);
});
