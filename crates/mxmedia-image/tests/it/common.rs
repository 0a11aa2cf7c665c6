//! Helpers shared by the integration tests: decoding our output back, pixel checks, generators.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, DynamicImage, ImageFormat, Rgb, RgbImage, RgbaImage};
use mxmedia_image::Thumbnail;

/// Decodes a still thumbnail and checks its declared type and size against its bytes.
pub fn decode(thumb: &Thumbnail) -> DynamicImage {
    let format = ImageFormat::from_mime_type(thumb.content_type).unwrap();
    assert_eq!(
        image::guess_format(&thumb.bytes).unwrap(),
        format,
        "content type matches bytes"
    );
    let img = image::load_from_memory_with_format(&thumb.bytes, format).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (thumb.width, thumb.height),
        "declared size"
    );
    img
}

/// Decodes an animated GIF thumbnail into its frames and their delays in ms.
pub fn decode_gif(thumb: &Thumbnail) -> Vec<(RgbaImage, u32)> {
    assert_eq!(thumb.content_type, "image/gif");
    let decoder = GifDecoder::new(Cursor::new(&thumb.bytes)).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    frames
        .into_iter()
        .map(|f| {
            let (num, den) = f.delay().numer_denom_ms();
            let buffer = f.into_buffer();
            assert_eq!(
                (buffer.width(), buffer.height()),
                (thumb.width, thumb.height)
            );
            (buffer, num / den)
        })
        .collect()
}

/// The mean RGB of a `size`×`size` patch centred on (x, y).
pub fn patch(img: &RgbImage, x: u32, y: u32, size: u32) -> [u8; 3] {
    let mut sum = [0u64; 3];
    let mut n = 0;
    for py in y - size / 2..=y + size / 2 {
        for px in x - size / 2..=x + size / 2 {
            let Rgb(p) = *img.get_pixel(px, py);
            for c in 0..3 {
                sum[c] += u64::from(p[c]);
            }
            n += 1;
        }
    }
    sum.map(|s| u8::try_from(s / n).unwrap())
}

/// Whether two colours are within `tol` of each other on every channel.
pub fn near(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
}

/// A deterministic photo-like RGB image: smooth gradients plus low-amplitude noise, so JPEG
/// sizes and decode costs resemble a real photo's.
pub fn photo(width: u32, height: u32) -> RgbImage {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = i64::try_from(seed % 24).unwrap() - 12;
        let ch = |v: u64| u8::try_from((i64::try_from(v).unwrap() + noise).clamp(0, 255)).unwrap();
        let (x, y, w, h) = (
            u64::from(x),
            u64::from(y),
            u64::from(width),
            u64::from(height),
        );
        Rgb([
            ch(x * 255 / w),
            ch(y * 255 / h),
            ch((x + y) * 127 / (w + h) + 64),
        ])
    })
}

/// Encodes an image with the `image` crate into `format`.
pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}
