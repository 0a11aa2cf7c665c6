//! JPEG: header reading and shrink-on-load decoding.
//!
//! A 12 Mpx photo decoded in full costs ~80 ms before any resizing; decoding it with a scaled IDCT
//! (1/2, 1/4 or 1/8) skips most of that work. `zune-jpeg` (the `image` crate's JPEG decoder) cannot
//! scale. Scaled decoding does not skip Huffman decoding, which then dominates, and there
//! libjpeg-turbo's SIMD decoder is several times faster than `jpeg-decoder` (about 90 ms CPU for
//! a 3.5 MB 12 Mpx JPEG at 1/8 with `jpeg-decoder`). So YCbCr and greyscale JPEGs, nearly all
//! photos, decode with libjpeg-turbo; CMYK/YCCK, lossless JPEGs and anything libjpeg-turbo refuses
//! (a truncated file, say) go through `jpeg-decoder`, which also reads every header and the ICC
//! profile. This file also owns turning CMYK into RGB.

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::{CodingProcess, Decoder, PixelFormat};

use crate::header::{self, Header};
use crate::resize::Plan;
use crate::{Error, Format, Limits, error, jpeg_scan};

/// Appended to a source that lacks it: a truncated file then reads as "scan data, then end of
/// image", so the decoder pads the missing rows instead of failing.
const END_OF_IMAGE: [u8; 2] = [0xFF, 0xD9];

pub(crate) fn header(src: &[u8]) -> Result<Header, Error> {
    let mut decoder = Decoder::new(src);
    decoder.read_info().map_err(error::from_jpeg)?;
    let Some(info) = decoder.info() else {
        return Err(Error::Corrupt("JPEG: no frame header".into()));
    };
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let (width, height) = (info.width.into(), info.height.into());
    let scan = jpeg_scan::scan(src);
    Ok(header::still(Format::Jpeg, width, height, orientation)
        .with_cost(scan.scans.max(1), scan.segments))
}

/// Decodes `src` at the smallest IDCT scale that still covers `plan`'s stored-space target, and
/// returns its ICC profile with it.
pub(crate) fn decode(
    src: &[u8],
    header: &Header,
    plan: &Plan,
    limits: &Limits,
) -> Result<(DynamicImage, Option<Vec<u8>>), Error> {
    // Reading from a plain slice keeps one instantiation of the decoder and its fast byte reads;
    // only a file without its end marker pays for a copy.
    let padded: Vec<u8>;
    let data = if src.ends_with(&END_OF_IMAGE) {
        src
    } else {
        padded = [src, END_OF_IMAGE.as_slice()].concat();
        &padded
    };
    let mut decoder = Decoder::new(data);
    let max_bytes = limits.max_pixels.saturating_mul(4);
    decoder.set_max_decoding_buffer_size(usize::try_from(max_bytes).unwrap_or(usize::MAX));
    decoder.read_info().map_err(error::from_jpeg)?;

    // Lossless JPEG has no DCT to scale.
    let lossless = decoder
        .info()
        .is_some_and(|info| info.coding_process == CodingProcess::Lossless);
    let denom = shrink_denominator(header.width, header.height, plan.width, plan.height);
    let colour = decoder.info().map(|info| info.pixel_format);
    if !lossless
        && matches!(colour, Some(PixelFormat::RGB24 | PixelFormat::L8))
        && let Some(image) = decode_turbo(data, denom, colour == Some(PixelFormat::L8), limits)
    {
        return Ok((image, decoder.icc_profile()));
    }
    if denom > 1 && !lossless {
        let (w, h) = (header.width.div_ceil(denom), header.height.div_ceil(denom));
        let (dw, dh) = decoder
            .scale(clamp_u16(w), clamp_u16(h))
            .map_err(error::from_jpeg)?;
        // jpeg-decoder picks the scale from *either* side reaching the request, which for sides of
        // a few pixels can be a smaller scale than ours; fall back to a full decode then.
        if u32::from(dw) < plan.width || u32::from(dh) < plan.height {
            decoder
                .scale(u16::MAX, u16::MAX)
                .map_err(error::from_jpeg)?;
        }
    }
    let pixels = decoder.decode().map_err(error::from_jpeg)?;
    let Some(info) = decoder.info() else {
        return Err(Error::Corrupt("JPEG: no frame header".into()));
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let image = match info.pixel_format {
        PixelFormat::L8 => GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        PixelFormat::L16 => {
            GrayImage::from_raw(w, h, narrow_l16(&pixels)).map(DynamicImage::ImageLuma8)
        }
        PixelFormat::RGB24 => RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        PixelFormat::CMYK32 => {
            RgbImage::from_raw(w, h, cmyk_to_rgb(&pixels)).map(DynamicImage::ImageRgb8)
        }
    };
    let Some(image) = image else {
        return Err(Error::Corrupt("JPEG: decoded buffer size mismatch".into()));
    };
    Ok((image, decoder.icc_profile()))
}

/// Decodes with libjpeg-turbo at 1/`denom` scale; `None` when it refuses the file, for
/// `jpeg-decoder` to try. The scans were counted and limited before either decoder ran
/// (`jpeg_scan.rs`); turbo's own scan limit is the same figure, a second line.
fn decode_turbo(data: &[u8], denom: u32, grey: bool, limits: &Limits) -> Option<DynamicImage> {
    let mut decompressor = turbojpeg::Decompressor::new().ok()?;
    // 0 would mean no limit.
    decompressor
        .set_scan_limit(limits.max_scans.clamp(1, 1 << 30))
        .ok()?;
    let factor = turbojpeg::ScalingFactor::new(1, usize::try_from(denom).ok()?);
    decompressor.set_scaling_factor(factor).ok()?;
    let scaled = decompressor.read_header(data).ok()?.scaled(factor);
    let (format, channels) = if grey {
        (turbojpeg::PixelFormat::GRAY, 1)
    } else {
        (turbojpeg::PixelFormat::RGB, 3)
    };
    let mut pixels = vec![
        0u8;
        scaled
            .width
            .checked_mul(scaled.height)?
            .checked_mul(channels)?
    ];
    let output = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: scaled.width,
        pitch: scaled.width * channels,
        height: scaled.height,
        format,
    };
    decompressor.decompress(data, output).ok()?;
    let (w, h) = (
        u32::try_from(scaled.width).ok()?,
        u32::try_from(scaled.height).ok()?,
    );
    if grey {
        GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    }
}

/// The IDCT scale denominator (1, 2, 4 or 8): the largest whose output still covers the target, so
/// the resampler only ever shrinks. `width`×`height` is the stored size, `target` the stored-space
/// output size. Covering the target on both sides suffices for crops too: the target has the crop's
/// aspect ratio, so a decoded image at least that large contains a crop at least that large.
pub(crate) fn shrink_denominator(width: u32, height: u32, target_w: u32, target_h: u32) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|&d| width.div_ceil(d) >= target_w && height.div_ceil(d) >= target_h)
        .unwrap_or(1)
}

/// Narrows lossless-JPEG samples (native-endian u16 of 2 to 16 bits; the precision is not exposed,
/// so it is taken from the largest sample) to 8 bits.
fn narrow_l16(pixels: &[u8]) -> Vec<u8> {
    let samples: Vec<u16> = pixels
        .chunks_exact(2)
        .map(|b| {
            u16::from_ne_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    let max = samples.iter().copied().max().unwrap_or(0);
    let shift = (u16::BITS - max.leading_zeros()).saturating_sub(8);
    samples
        .iter()
        .map(|&v| u8::try_from(v >> shift).unwrap_or(u8::MAX))
        .collect()
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// CMYK to RGB. `jpeg-decoder` has already undone the inversion Adobe applications write (it
/// returns 0 for no ink), for plain CMYK and YCCK alike, so this is the naive subtractive model:
/// without the file's ICC profile there is nothing better to do, and it keeps hues right.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let &[c, m, y, k] = px else { continue };
        let white = 255 - u16::from(k);
        for ink in [c, m, y] {
            let v = (255 - u16::from(ink)) * white / 255;
            rgb.push(u8::try_from(v).unwrap_or(u8::MAX));
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::{cmyk_to_rgb, narrow_l16, shrink_denominator};

    /// The largest reduction whose output still covers the target on both sides.
    #[test]
    fn denominators() {
        assert_eq!(shrink_denominator(4000, 3000, 320, 240), 8); // 500x375
        assert_eq!(shrink_denominator(4000, 3000, 96, 96), 8);
        assert_eq!(shrink_denominator(4000, 3000, 800, 600), 4); // 1000x750
        assert_eq!(shrink_denominator(2000, 1500, 800, 600), 2);
        assert_eq!(shrink_denominator(1000, 750, 800, 600), 1);
        assert_eq!(shrink_denominator(640, 480, 320, 240), 2); // exactly covers
        assert_eq!(shrink_denominator(641, 481, 320, 240), 2);
        assert_eq!(shrink_denominator(638, 480, 320, 240), 1); // ceil(638/2) = 319
        // the side that binds may be either one
        assert_eq!(shrink_denominator(4000, 100, 320, 24), 4);
        assert_eq!(shrink_denominator(17, 9, 4, 2), 4); // ceil(17/8)=3 < 4
        assert_eq!(shrink_denominator(1, 1, 1, 1), 8);
    }

    /// 12-bit samples (as lossless JPEGs hold) scale to the full 8-bit range.
    #[test]
    fn narrows_deep_grey() {
        let samples: Vec<u8> = [0u16, 2048, 4095]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(narrow_l16(&samples), [0, 128, 255]);
        let low: Vec<u8> = [0u16, 100, 255]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert_eq!(narrow_l16(&low), [0, 100, 255]);
    }

    /// No ink is white, full K is black, and pure process colours give their RGB complements.
    #[test]
    fn cmyk_colours() {
        let cmyk = [
            0, 0, 0, 0, 0, 0, 0, 255, 0, 255, 255, 0, 255, 0, 0, 0, 0, 0, 0, 128,
        ];
        let rgb = cmyk_to_rgb(&cmyk);
        assert_eq!(
            rgb,
            [
                255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 127, 127, 127
            ]
        );
    }
}
