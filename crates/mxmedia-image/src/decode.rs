//! Still decoding: the first (or only) frame of any supported source, as 8-bit pixels.
//!
//! JPEG goes through `jpeg.rs` for shrink-on-load; PNG, GIF and WebP through the `image` crate's
//! decoders with an allocation cap. Sizes have been checked against the limits before this runs.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::{DynamicImage, ImageDecoder};

use crate::header::Header;
use crate::resize::Plan;
use crate::{Error, Format, Limits, error, jpeg};

/// Decodes the first frame of `src`, converted to 8 bits per channel (L, LA, RGB or RGBA), with
/// the ICC profile it is tagged with, if any.
pub(crate) fn first_frame(
    src: &[u8],
    header: &Header,
    plan: &Plan,
    limits: &Limits,
) -> Result<(DynamicImage, Option<Vec<u8>>), Error> {
    let cursor = Cursor::new(src);
    let pixels = header.frame_pixels;
    let decode_err = |e| error::from_decode(e, pixels);
    match header.format {
        Format::Jpeg => jpeg::decode(src, header, plan, limits),
        Format::Png => {
            let decoder =
                PngDecoder::with_limits(cursor, limits.image_limits()).map_err(decode_err)?;
            still(decoder, pixels)
        }
        Format::Gif => {
            let mut decoder = GifDecoder::new(cursor).map_err(decode_err)?;
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_err)?;
            still(decoder, pixels)
        }
        Format::WebP => {
            let mut decoder = WebPDecoder::new(cursor).map_err(decode_err)?;
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_err)?;
            still(decoder, pixels)
        }
    }
}

/// Reads the profile (an unreadable one counts as none) and the pixels of a configured decoder.
fn still(
    mut decoder: impl ImageDecoder,
    pixels: u64,
) -> Result<(DynamicImage, Option<Vec<u8>>), Error> {
    let icc = decoder.icc_profile().ok().flatten();
    let image = DynamicImage::from_decoder(decoder).map_err(|e| error::from_decode(e, pixels))?;
    Ok((to_8bit(image), icc))
}

/// Thumbnails are 8-bit JPEG, PNG or GIF, so 16-bit and float sources are narrowed once, here,
/// before resizing (which then runs on half the bytes).
fn to_8bit(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => image,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(image.into_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(image.into_luma_alpha8()),
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.into_rgba8()),
        other => DynamicImage::ImageRgb8(other.into_rgb8()),
    }
}
