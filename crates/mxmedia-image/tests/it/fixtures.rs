//! Every fixture through `probe` and `thumbnail`: formats, sizes, orientation, CMYK, alpha, damage.

use mxmedia_image::{Error, Format, Limits, Method, Probe, probe, thumbnail};

use crate::common::{decode, near, patch};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");
const TRUNCATED: &[u8] = include_bytes!("../fixtures/truncated_640x480.jpg");
const ORIENT6: &[u8] = include_bytes!("../fixtures/exif_orient6_320x240.jpg");
const TINY_PNG: &[u8] = include_bytes!("../fixtures/tiny_64x64.png");
const ANIM_GIF: &[u8] = include_bytes!("../fixtures/anim_64x64_8f.gif");
const GARBAGE: &[u8] = include_bytes!("../fixtures/garbage_after_png_sig.png");
const CMYK: &[u8] = include_bytes!("../fixtures/cmyk_quadrants_64x64.jpg");
const WEBP: &[u8] = include_bytes!("../fixtures/photo_160x120.webp");
const ALPHA_WEBP: &[u8] = include_bytes!("../fixtures/alpha_64x64.webp");
const ANIM_WEBP: &[u8] = include_bytes!("../fixtures/anim_64x64_8f.webp");

fn thumb(src: &[u8], w: u32, h: u32, method: Method) -> Result<mxmedia_image::Thumbnail, Error> {
    thumbnail(src, w, h, method, false, &Limits::default())
}

/// `probe` reports the format, the displayed size and animation of every readable fixture.
#[test]
fn probe_every_fixture() {
    let p = |format, width, height, animated| Probe {
        format,
        width,
        height,
        animated,
    };
    let cases: [(&str, &[u8], Probe); 10] = [
        ("photo", PHOTO, p(Format::Jpeg, 640, 480, false)),
        ("truncated", TRUNCATED, p(Format::Jpeg, 640, 480, false)),
        ("orient6", ORIENT6, p(Format::Jpeg, 240, 320, false)),
        ("tiny png", TINY_PNG, p(Format::Png, 64, 64, false)),
        ("anim gif", ANIM_GIF, p(Format::Gif, 64, 64, true)),
        ("cmyk", CMYK, p(Format::Jpeg, 64, 64, false)),
        ("webp", WEBP, p(Format::WebP, 160, 120, false)),
        ("alpha webp", ALPHA_WEBP, p(Format::WebP, 64, 64, false)),
        ("anim webp", ANIM_WEBP, p(Format::WebP, 64, 64, true)),
        (
            "bomb",
            include_bytes!("../fixtures/bomb_50000x50000.png"),
            p(Format::Png, 50000, 50000, false),
        ),
    ];
    for (name, src, expected) in cases {
        assert_eq!(probe(src).unwrap(), expected, "{name}");
    }
    assert!(matches!(probe(GARBAGE), Err(Error::Corrupt(_))));
    assert!(matches!(
        probe(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        Err(Error::Unsupported)
    ));
    assert!(matches!(probe(b""), Err(Error::Unsupported)));
}

/// A JPEG photo scales to fit the box and crops to the exact requested size.
#[test]
fn photo_scale_and_crop() {
    let scaled = thumb(PHOTO, 320, 240, Method::Scale).unwrap();
    assert_eq!(
        (scaled.content_type, scaled.width, scaled.height),
        ("image/jpeg", 320, 240)
    );
    decode(&scaled);
    let scaled = thumb(PHOTO, 96, 96, Method::Scale).unwrap();
    assert_eq!((scaled.width, scaled.height), (96, 72));
    decode(&scaled);
    for (w, h) in [(96, 96), (32, 32), (320, 100), (50, 400)] {
        let cropped = thumb(PHOTO, w, h, Method::Crop).unwrap();
        assert_eq!((cropped.width, cropped.height), (w, h), "crop {w}x{h}");
        decode(&cropped);
    }
    // never upscaled
    let big = thumb(PHOTO, 800, 600, Method::Scale).unwrap();
    assert_eq!((big.width, big.height), (640, 480));
    let big = thumb(PHOTO, 800, 600, Method::Crop).unwrap();
    assert_eq!((big.width, big.height), (640, 480));
}

/// EXIF orientation 6 comes out 240 wide and 320 high with the white arrow pointing up.
#[test]
fn exif_orientation_applied() {
    // Sample points measured on the correctly displayed image: head and shaft of the arrow are
    // white, the background beside the shaft and above the head is not.
    let white = [(120, 100), (90, 150), (150, 150), (120, 200)];
    let background = [(90, 200), (150, 200), (90, 110), (150, 110), (120, 60)];
    let full = thumb(ORIENT6, 800, 600, Method::Scale).unwrap();
    assert_eq!((full.width, full.height), (240, 320));
    let img = decode(&full).to_rgb8();
    for (x, y) in white {
        assert!(
            near(patch(&img, x, y, 3), [255, 255, 255], 30),
            "white at {x},{y}"
        );
    }
    for (x, y) in background {
        assert!(
            !near(patch(&img, x, y, 3), [255, 255, 255], 60),
            "background at {x},{y}"
        );
    }
    // downscaled, the same points at half the coordinates
    let half = thumb(ORIENT6, 120, 160, Method::Scale).unwrap();
    assert_eq!((half.width, half.height), (120, 160));
    let img = decode(&half).to_rgb8();
    for (x, y) in white {
        assert!(
            near(patch(&img, x / 2, y / 2, 1), [255, 255, 255], 40),
            "white at {x},{y}"
        );
    }
    let crop = thumb(ORIENT6, 96, 96, Method::Crop).unwrap();
    assert_eq!((crop.width, crop.height), (96, 96));
}

/// A transparent PNG stays PNG, keeps its alpha, and is never upscaled.
#[test]
fn transparent_png() {
    let same = thumb(TINY_PNG, 320, 240, Method::Scale).unwrap();
    assert_eq!(
        (same.content_type, same.width, same.height),
        ("image/png", 64, 64)
    );
    let crop = thumb(TINY_PNG, 32, 32, Method::Crop).unwrap();
    assert_eq!(
        (crop.content_type, crop.width, crop.height),
        ("image/png", 32, 32)
    );
    let img = decode(&crop);
    assert!(img.color().has_alpha());
    assert!(
        img.to_rgba8().pixels().any(|p| p.0[3] < 255),
        "transparency kept"
    );
}

/// WebP sources decode, lossy to JPEG and with-alpha to PNG.
#[test]
fn webp_sources() {
    let lossy = thumb(WEBP, 96, 96, Method::Crop).unwrap();
    assert_eq!(
        (lossy.content_type, lossy.width, lossy.height),
        ("image/jpeg", 96, 96)
    );
    decode(&lossy);
    let alpha = thumb(ALPHA_WEBP, 32, 32, Method::Scale).unwrap();
    assert_eq!(
        (alpha.content_type, alpha.width, alpha.height),
        ("image/png", 32, 32)
    );
    decode(&alpha);
}

/// An Adobe CMYK JPEG comes out with its colours right: red, green / blue, white quadrants.
#[test]
fn cmyk_jpeg_colours() {
    for request in [64, 32] {
        let t = thumb(CMYK, request, request, Method::Scale).unwrap();
        assert_eq!((t.content_type, t.width), ("image/jpeg", request));
        let img = decode(&t).to_rgb8();
        let q = request / 4;
        let quadrants = [
            ((q, q), [255, 0, 0]),
            ((3 * q, q), [0, 255, 0]),
            ((q, 3 * q), [0, 0, 255]),
            ((3 * q, 3 * q), [255, 255, 255]),
        ];
        for ((x, y), colour) in quadrants {
            let got = patch(&img, x, y, 3);
            assert!(
                near(got, colour, 40),
                "{request}: at {x},{y} got {got:?} want {colour:?}"
            );
        }
    }
}

/// A JPEG cut in half never panics: it comes out as a thumbnail of the full size (the missing
/// rows padded), the top half still the photo.
#[test]
fn truncated_jpeg() {
    let t = thumb(TRUNCATED, 320, 240, Method::Scale).unwrap();
    assert_eq!((t.width, t.height), (320, 240));
    let whole = decode(&thumb(PHOTO, 320, 240, Method::Scale).unwrap()).to_rgb8();
    let cut = decode(&t).to_rgb8();
    for (x, y) in [(40, 20), (160, 40), (280, 60)] {
        assert!(
            near(patch(&whole, x, y, 3), patch(&cut, x, y, 3), 24),
            "top half at {x},{y}"
        );
    }
}

/// Bytes that sniff as PNG but are not one are corrupt, not a panic; non-images are unsupported.
#[test]
fn corrupt_and_unsupported() {
    assert!(matches!(
        thumb(GARBAGE, 96, 96, Method::Crop),
        Err(Error::Corrupt(_))
    ));
    let head = PHOTO.get(..200).unwrap();
    assert!(matches!(
        thumb(head, 96, 96, Method::Crop),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        thumb(b"%PDF-1.7", 96, 96, Method::Crop),
        Err(Error::Unsupported)
    ));
    for cut in [10, 30, 100, 1000, 5000] {
        for src in [TINY_PNG, ANIM_GIF, WEBP, ANIM_WEBP] {
            // any outcome but a panic or an oversized image
            if let Ok(t) = thumb(src.get(..cut.min(src.len())).unwrap(), 32, 32, Method::Crop) {
                assert!(t.width <= 64 && t.height <= 64);
            }
        }
    }
}

/// Damaged copies of every small fixture (bytes overwritten at spread-out offsets) give an error or
/// an image no larger than the source, and never take the process down.
#[test]
fn mutated_fixtures_never_abort() {
    let sources: [&[u8]; 7] = [PHOTO, TINY_PNG, ANIM_GIF, CMYK, WEBP, ALPHA_WEBP, ANIM_WEBP];
    let mut seed = 0x1234_5678_9ABC_DEF1u64;
    for src in sources {
        let original = probe(src).unwrap();
        for _ in 0..24 {
            let mut damaged = src.to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = usize::try_from(seed % u64::try_from(damaged.len()).unwrap()).unwrap();
                damaged[at] = u8::try_from(seed >> 56).unwrap();
            }
            let limits = Limits::default();
            if let Ok(t) = thumbnail(&damaged, 48, 48, Method::Scale, true, &limits) {
                // a damaged header may declare another size; the output still fits the request
                assert!(
                    t.width <= 48 && t.height <= 48,
                    "{original:?} -> {}x{}",
                    t.width,
                    t.height
                );
            }
        }
    }
}
