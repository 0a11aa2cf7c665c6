//! ICC colour management: RGB pixels tagged with a profile (Display P3 from phones, Adobe RGB from
//! cameras) are converted to sRGB, which is what clients assume for untagged thumbnails.
//!
//! Runs on the resized thumbnail, so it costs a transform build and a pass over a few thousand
//! pixels. Any profile we cannot use leaves the pixels as they are: slightly wrong colours beat
//! no thumbnail. CMYK profiles are not applied (CMYK goes through the naive conversion in
//! `jpeg.rs`), nor are profiles of animation frames.

use image::DynamicImage;
use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

/// Converts an 8-bit RGB or RGBA `image` from the colour space of `icc` to sRGB, in place.
pub(crate) fn to_srgb(image: &mut DynamicImage, icc: &[u8]) {
    let Ok(profile) = ColorProfile::new_from_slice(icc) else {
        return;
    };
    if profile.color_space != DataColorSpace::Rgb {
        return;
    }
    match image {
        DynamicImage::ImageRgb8(buffer) => convert(&profile, Layout::Rgb, buffer),
        DynamicImage::ImageRgba8(buffer) => convert(&profile, Layout::Rgba, buffer),
        _ => {}
    }
}

fn convert(profile: &ColorProfile, layout: Layout, pixels: &mut [u8]) {
    let srgb = ColorProfile::new_srgb();
    let options = TransformOptions::default();
    let Ok(transform) = profile.create_transform_8bit(layout, &srgb, layout, options) else {
        return;
    };
    let source = pixels.to_vec();
    // On failure the destination may be partly written; put the source back.
    if transform.transform(&source, pixels).is_err() {
        pixels.copy_from_slice(&source);
    }
}
