//! Sources made to pin a decoder: progressive JPEGs with thousands of scans (on the libjpeg-turbo
//! path and on the `jpeg-decoder` fallback), and PNG, GIF and WebP files with huge numbers of
//! chunks or frames. All are refused from their structure, before decoding, in milliseconds.

use std::time::{Duration, Instant};

use mxmedia_image::{Error, Limits, Method, probe, thumbnail};

/// Hand-made progressive JPEGs whose scans cost a full pass each but carry two bytes.
pub mod jpeg {
    /// A `size`×`size` progressive JPEG of `components` components (1 grey, 3 YCbCr, 4 CMYK),
    /// all 1x1 sampled, with one DC scan and `ac_scans` AC scans spread over the components.
    /// Every block is flat: each AC scan is end-of-band runs of 16 384 blocks, so the file stays
    /// small however many scans it has. `size` must be a multiple of 1024.
    pub fn progressive(size: u16, components: u8, ac_scans: u32) -> Vec<u8> {
        assert_eq!(size % 1024, 0);
        let mut out = vec![0xFF, 0xD8];
        if components == 4 {
            // Adobe APP14, transform 0: plain CMYK.
            segment(&mut out, 0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00");
        }
        let mut dqt = vec![0];
        dqt.extend([1u8; 64]);
        segment(&mut out, 0xDB, &dqt);
        let mut sof = vec![8];
        sof.extend(size.to_be_bytes());
        sof.extend(size.to_be_bytes());
        sof.push(components);
        for c in 0..components {
            sof.extend([c + 1, 0x11, 0]);
        }
        segment(&mut out, 0xC2, &sof);
        // One code each, of length 1: DC difference category 0, and AC EOB run 2^14 (+14 bits).
        let table = |class_id: u8, symbol: u8| {
            let mut t = vec![class_id, 1];
            t.extend([0u8; 15]);
            t.push(symbol);
            t
        };
        segment(&mut out, 0xC4, &table(0x00, 0x00));
        segment(&mut out, 0xC4, &table(0x10, 0xE0));
        let blocks = (usize::from(size) / 8).pow(2);
        // DC scan, all components interleaved: one 0 bit per block.
        let mut sos = vec![components];
        for c in 0..components {
            sos.extend([c + 1, 0x00]);
        }
        sos.extend([0, 0, 0]);
        segment(&mut out, 0xDA, &sos);
        out.extend(vec![0u8; (blocks * usize::from(components)).div_ceil(8)]);
        // AC scans: per component, EOB runs of 16 384 blocks, 15 zero bits each.
        let runs = blocks / 16_384;
        for i in 0..ac_scans {
            let component = u8::try_from(i % u32::from(components)).unwrap() + 1;
            segment(&mut out, 0xDA, &[1, component, 0x00, 1, 63, 0]);
            out.extend(vec![0u8; (runs * 15).div_ceil(8)]);
        }
        out.extend([0xFF, 0xD9]);
        out
    }

    fn segment(out: &mut Vec<u8>, marker: u8, data: &[u8]) {
        out.extend([0xFF, marker]);
        out.extend(u16::try_from(data.len() + 2).unwrap().to_be_bytes());
        out.extend(data);
    }
}

/// CRC-32 of PNG chunks (ISO 3309), bit by bit: test files are small.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let body = [kind.as_slice(), data].concat();
    [
        u32::try_from(data.len()).unwrap().to_be_bytes().as_slice(),
        &body,
        &crc32(&body).to_be_bytes(),
    ]
    .concat()
}

/// A real 64x64 PNG from the `png` crate, `frames` frames if more than one.
fn png(frames: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 64, 64);
        encoder.set_color(png::ColorType::Rgb);
        if frames > 1 {
            encoder.set_animated(frames, 0).unwrap();
        }
        let mut writer = encoder.write_header().unwrap();
        for i in 0..frames {
            let shade = u8::try_from(i % 256).unwrap();
            writer.write_image_data(&vec![shade; 64 * 64 * 3]).unwrap();
        }
    }
    out
}

/// `src` with `chunk` inserted `n` times right after IHDR.
fn png_with(src: &[u8], chunk: &[u8], n: usize) -> Vec<u8> {
    let ihdr_end = 8 + 8 + 13 + 4;
    let mut out = src[..ihdr_end].to_vec();
    for _ in 0..n {
        out.extend(chunk);
    }
    out.extend(&src[ihdr_end..]);
    out
}

/// Runs `thumbnail` still and animated and expects `TooCostly` within 200 ms each.
fn refused_quickly(src: &[u8], what: &str) {
    for animated in [false, true] {
        let started = Instant::now();
        let result = thumbnail(src, 96, 96, Method::Crop, animated, &Limits::default());
        let took = started.elapsed();
        assert!(
            matches!(result, Err(Error::TooCostly(_))),
            "{what}: {result:?}"
        );
        assert!(took < Duration::from_millis(200), "{what}: took {took:?}");
    }
    assert!(probe(src).is_ok(), "{what}: the header itself is readable");
}

/// A progressive JPEG with 5 000 flat AC scans is refused before decoding, whichever decoder
/// would take it: YCbCr (libjpeg-turbo refuses it at its own scan limit, and `jpeg-decoder`
/// would then decode every scan), CMYK (straight to `jpeg-decoder`, which has no scan limit)
/// and greyscale. With the limits lifted the same files do decode, so the refusal is the
/// budget's, not a malformed file's.
#[test]
fn jpeg_with_thousands_of_scans_is_refused() {
    for components in [3, 4, 1] {
        let src = jpeg::progressive(2048, components, 5_000);
        assert!(src.len() < 200_000, "a small file: {} bytes", src.len());
        refused_quickly(&src, &format!("{components} components"));
    }
    let unlimited = Limits {
        max_scans: u32::MAX,
        max_scan_pixels: u64::MAX,
        ..Limits::default()
    };
    for components in [3, 4, 1] {
        let small = jpeg::progressive(1024, components, 600);
        let thumb = thumbnail(&small, 96, 96, Method::Crop, false, &unlimited);
        assert!(thumb.is_ok(), "{components} components: {thumb:?}");
    }
}

/// Few scans, but each over a large frame: scans × pixels is limited too. A 4 Mpx frame may
/// have 95 scans (under 400 M scan-pixels), not 100.
#[test]
fn jpeg_scan_pixels_are_limited() {
    let allowed = jpeg::progressive(2048, 4, 94);
    assert!(thumbnail(&allowed, 96, 96, Method::Crop, false, &Limits::default()).is_ok());
    let refused = jpeg::progressive(2048, 4, 99);
    let result = thumbnail(&refused, 96, 96, Method::Crop, false, &Limits::default());
    assert!(
        matches!(&result, Err(Error::TooCostly(why)) if why.contains("scan-pixels")),
        "{result:?}"
    );
}

/// A PNG padded with 150 000 tiny ancillary chunks (each valid, each parsed and CRC-checked by
/// the decoder) is refused from its chunk count.
#[test]
fn png_with_too_many_chunks_is_refused() {
    let src = png_with(&png(1), &png_chunk(b"maDe", &[]), 150_000);
    refused_quickly(&src, "PNG chunks");
}

/// An APNG whose `acTL` claims 2 frames but which holds 600 is counted by its frame controls:
/// the animated thumbnail is refused before decoding a frame, the still one is made.
#[test]
fn apng_undercounting_its_frames_is_refused() {
    let mut src = png(600);
    let actl = src
        .windows(4)
        .position(|w| w == b"acTL")
        .expect("an acTL chunk");
    src[actl + 4..actl + 8].copy_from_slice(&2u32.to_be_bytes());
    let crc = crc32(&src[actl..actl + 12]);
    src[actl + 12..actl + 16].copy_from_slice(&crc.to_be_bytes());
    let started = Instant::now();
    let result = thumbnail(&src, 32, 32, Method::Crop, true, &Limits::default());
    assert!(
        matches!(result, Err(Error::TooManyFrames { frames: 600 })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(thumbnail(&src, 32, 32, Method::Crop, false, &Limits::default()).is_ok());
}

/// A GIF of one frame after 150 000 comment extensions is refused from its block count.
#[test]
fn gif_with_too_many_blocks_is_refused() {
    let mut src = b"GIF89a".to_vec();
    src.extend([4, 0, 4, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 4x4, 2-colour table
    for _ in 0..150_000 {
        src.extend([0x21, 0xFE, 1, b'x', 0]);
    }
    src.extend([0x2C, 0, 0, 0, 0, 4, 0, 4, 0, 0, 2, 2, 0x84, 0x51, 0]);
    src.push(0x3B);
    assert!(probe(&src).is_ok());
    refused_quickly(&src, "GIF blocks");
}

/// A WebP with 150 000 unknown chunks before its image is refused from its chunk count.
#[test]
fn webp_with_too_many_chunks_is_refused() {
    // Embedded, not read at run time: a test binary reused from a build cache made in another
    // checkout would look for the file where that checkout was.
    let still = include_bytes!("../fixtures/photo_160x120.webp").to_vec();
    // Simple lossy WebP: RIFF header, then its VP8 chunk; make it extended (VP8X) with the
    // padding chunks after the header, as the container allows unknown chunks there.
    let (width, height) = (160u32 - 1, 120u32 - 1);
    let mut body = b"WEBP".to_vec();
    body.extend(b"VP8X");
    body.extend(10u32.to_le_bytes());
    body.extend([0, 0, 0, 0]);
    body.extend(&width.to_le_bytes()[..3]);
    body.extend(&height.to_le_bytes()[..3]);
    for _ in 0..150_000 {
        body.extend(b"PADx");
        body.extend(0u32.to_le_bytes());
    }
    body.extend(&still[12..]);
    let size = u32::try_from(body.len()).unwrap();
    let src = [b"RIFF".as_slice(), &size.to_le_bytes(), &body].concat();
    assert_eq!(probe(&src).unwrap().width, 160);
    refused_quickly(&src, "WebP chunks");
}
