//! Images made in code: larger photos (shrink-on-load), crop geometry, colour types, CMYK variants.

use image::{DynamicImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use jpeg_encoder::{ColorType, Encoder};
use mxmedia_image::{Limits, Method, thumbnail};

use crate::common::{decode, encode, near, patch, photo};

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    img.write_with_encoder(encoder).unwrap();
    out
}

/// A large JPEG goes through shrink-on-load and still comes out at the exact size, with its colours
/// where they were (the gradient runs red left to right, green top to bottom).
#[test]
fn large_jpeg_shrink_on_load() {
    let src = jpeg(&photo(2048, 1536), 90);
    for (w, h, method, expected) in [
        (320, 240, Method::Scale, (320, 240)),
        (96, 96, Method::Crop, (96, 96)),
        (800, 600, Method::Scale, (800, 600)),
        (1000, 1000, Method::Scale, (1000, 750)),
    ] {
        let t = thumbnail(&src, w, h, method, false, &Limits::default()).unwrap();
        assert_eq!((t.width, t.height), expected, "{w}x{h} {method:?}");
        let img = decode(&t).to_rgb8();
        let (x1, y1) = (t.width / 8, t.height / 8);
        let (x2, y2) = (t.width - x1, t.height - y1);
        let [r_left, g_top, _] = patch(&img, x1, y1, 3);
        let [r_right, g_bottom, _] = patch(&img, x2, y2, 3);
        assert!(
            r_right > r_left + 100,
            "red grows to the right: {r_left} -> {r_right}"
        );
        assert!(
            g_bottom > g_top + 100,
            "green grows downwards: {g_top} -> {g_bottom}"
        );
    }
}

/// Crop takes the centre: of a red | green | blue strip image only green survives a square crop.
#[test]
fn crop_is_centred() {
    let strips = RgbImage::from_fn(300, 100, |x, _| match x / 100 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let src = encode(&DynamicImage::ImageRgb8(strips), ImageFormat::Png);
    let t = thumbnail(&src, 48, 48, Method::Crop, false, &Limits::default()).unwrap();
    assert_eq!((t.content_type, t.width, t.height), ("image/jpeg", 48, 48));
    let img = decode(&t).to_rgb8();
    for (x, y) in [(4, 4), (24, 24), (43, 43), (4, 43)] {
        assert!(
            near(patch(&img, x, y, 3), [0, 255, 0], 40),
            "green at {x},{y}"
        );
    }
    // scale keeps all three
    let t = thumbnail(&src, 60, 60, Method::Scale, false, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (60, 20));
    let img = decode(&t).to_rgb8();
    assert!(near(patch(&img, 5, 10, 3), [255, 0, 0], 40));
    assert!(near(patch(&img, 54, 10, 3), [0, 0, 255], 40));
}

/// Extreme aspect ratios give 1-pixel sides, never 0 and never a failure.
#[test]
fn extreme_aspect_ratios() {
    for (w, h) in [(4000, 1), (1, 4000)] {
        let src = encode(&DynamicImage::ImageRgb8(photo(w, h)), ImageFormat::Png);
        for method in [Method::Scale, Method::Crop] {
            let t = thumbnail(&src, 96, 96, method, false, &Limits::default()).unwrap();
            assert!(t.width >= 1 && t.height >= 1 && t.width <= 96 && t.height <= 96);
            decode(&t);
        }
    }
}

/// Opaque RGBA becomes JPEG; greyscale and 16-bit sources work.
#[test]
fn colour_types() {
    let opaque = RgbaImage::from_pixel(200, 100, Rgba([200, 100, 50, 255]));
    let src = encode(&DynamicImage::ImageRgba8(opaque), ImageFormat::Png);
    let t = thumbnail(&src, 96, 96, Method::Crop, false, &Limits::default()).unwrap();
    assert_eq!(t.content_type, "image/jpeg");
    assert!(near(
        patch(&decode(&t).to_rgb8(), 48, 48, 3),
        [200, 100, 50],
        8
    ));

    let grey = image::GrayImage::from_fn(300, 200, |x, _| Luma([u8::try_from(x % 256).unwrap()]));
    let src = jpeg(&DynamicImage::ImageLuma8(grey.clone()).to_rgb8(), 90);
    let t = thumbnail(&src, 96, 96, Method::Crop, false, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (96, 96));
    let mut grey_jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut grey_jpeg)
        .encode_image(&grey)
        .unwrap();
    let t = thumbnail(
        &grey_jpeg,
        150,
        100,
        Method::Scale,
        false,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        (t.content_type, t.width, t.height),
        ("image/jpeg", 150, 100)
    );

    let deep = DynamicImage::ImageRgba16(DynamicImage::ImageRgb8(photo(120, 90)).to_rgba16());
    let src = encode(&deep, ImageFormat::Png);
    let t = thumbnail(&src, 60, 60, Method::Scale, false, &Limits::default()).unwrap();
    assert_eq!((t.content_type, t.width, t.height), ("image/jpeg", 60, 45));
}

/// CMYK written by another encoder, plain and as YCCK, with an ICC profile attached: colours come
/// out right and nothing fails on the profile.
#[test]
fn cmyk_and_icc_from_jpeg_encoder() {
    // true CMYK (0 = no ink): cyan | magenta | yellow | black, 16 px each
    let inks: [[u8; 4]; 4] = [
        [255, 0, 0, 0],
        [0, 255, 0, 0],
        [0, 0, 255, 0],
        [0, 0, 0, 255],
    ];
    let expected = [[0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0]];
    let mut pixels = Vec::new();
    for _y in 0..16 {
        for x in 0..64usize {
            pixels.extend(inks[x / 16]);
        }
    }
    for color in [ColorType::Cmyk, ColorType::CmykAsYcck] {
        let mut src = Vec::new();
        let mut encoder = Encoder::new(&mut src, 95);
        encoder.add_icc_profile(&[0x42; 600]).unwrap(); // not a valid profile: must be harmless
        encoder.encode(&pixels, 64, 16, color).unwrap();
        let t = thumbnail(&src, 64, 16, Method::Scale, false, &Limits::default()).unwrap();
        let img = decode(&t).to_rgb8();
        for (i, want) in expected.iter().enumerate() {
            let x = u32::try_from(i).unwrap() * 16 + 8;
            let got = patch(&img, x, 8, 3);
            assert!(
                near(got, *want, 40),
                "{color:?} stripe {i}: got {got:?} want {want:?}"
            );
        }
    }
}

/// An EXIF APP1 segment holding only Orientation (tag 0x0112) = `value`, big-endian TIFF.
fn exif_orientation_segment(value: u8) -> Vec<u8> {
    let mut tiff = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend([0, 1]); // one IFD entry
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]); // SHORT, count 1, value
    tiff.extend([0, 0, 0, 0]); // no next IFD
    let len = u16::try_from(tiff.len() + 2).unwrap().to_be_bytes();
    [vec![0xFF, 0xE1, len[0], len[1]], tiff].concat()
}

/// Orientation and shrink-on-load together: a large JPEG stored landscape with orientation 6 comes
/// out portrait, at the requested size, turned clockwise (stored left edge at the top).
#[test]
fn large_rotated_jpeg() {
    let plain = jpeg(&photo(2048, 1536), 85);
    let src = [&plain[..2], &exif_orientation_segment(6), &plain[2..]].concat();
    let p = mxmedia_image::probe(&src).unwrap();
    assert_eq!((p.width, p.height), (1536, 2048));
    let t = thumbnail(&src, 320, 240, Method::Scale, false, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (180, 240));
    let img = decode(&t).to_rgb8();
    // stored: red grows rightwards, green downwards; turned clockwise: red grows downwards, green
    // grows leftwards
    let [r_top, g_right, _] = patch(&img, 160, 20, 3);
    let [r_bottom, g_left, _] = patch(&img, 20, 220, 3);
    assert!(
        r_bottom > r_top + 100,
        "red grows downwards: {r_top} -> {r_bottom}"
    );
    assert!(
        g_left > g_right + 100,
        "green grows leftwards: {g_right} -> {g_left}"
    );
    let t = thumbnail(&src, 96, 96, Method::Crop, false, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (96, 96));
}

/// A photo tagged Display P3 is converted to sRGB (a warm orange gets redder and less green: about
/// (215, 92) from (200, 100) by the P3-to-sRGB matrix); untagged or garbage-tagged it is left alone.
#[test]
fn display_p3_to_srgb() {
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let orange = RgbImage::from_pixel(64, 64, Rgb([200, 100, 50]));
    let tagged = |icc: Option<&[u8]>| {
        let mut src = Vec::new();
        let mut encoder = Encoder::new(&mut src, 95);
        if let Some(icc) = icc {
            encoder.add_icc_profile(icc).unwrap();
        }
        encoder
            .encode(orange.as_raw(), 64, 64, ColorType::Rgb)
            .unwrap();
        let t = thumbnail(&src, 32, 32, Method::Scale, false, &Limits::default()).unwrap();
        patch(&decode(&t).to_rgb8(), 16, 16, 3)
    };
    let [r, g, _] = tagged(Some(&p3));
    assert!(r >= 209 && g <= 96, "P3 converted: got ({r}, {g})");
    assert!(near(tagged(None), [200, 100, 50], 5), "untagged unchanged");
    assert!(
        near(tagged(Some(&[7; 300])), [200, 100, 50], 5),
        "garbage profile ignored"
    );

    // the same through PNG's iCCP chunk, with alpha
    let mut png = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
    image::ImageEncoder::set_icc_profile(&mut encoder, p3).unwrap();
    let rgba = RgbaImage::from_pixel(64, 64, Rgba([200, 100, 50, 128]));
    image::ImageEncoder::write_image(
        encoder,
        rgba.as_raw(),
        64,
        64,
        image::ExtendedColorType::Rgba8,
    )
    .unwrap();
    let t = thumbnail(&png, 32, 32, Method::Scale, false, &Limits::default()).unwrap();
    assert_eq!(t.content_type, "image/png");
    let px = decode(&t).to_rgba8().get_pixel(16, 16).0;
    assert!(
        px[0] >= 209 && px[1] <= 96 && px[3] == 128,
        "P3 PNG converted: {px:?}"
    );
}
