//! Still encoding: JPEG for opaque thumbnails, PNG for those that really use transparency.
//!
//! The choice is made on the resized pixels, not on the source's colour type: many RGBA uploads
//! are fully opaque, and JPEG is several times smaller for photos.

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder};

use crate::{Error, Thumbnail, error};

/// JPEG quality of thumbnails: visually clean at thumbnail sizes, about half the bytes of 95.
const JPEG_QUALITY: u8 = 85;

/// Encodes a resized still image as JPEG or PNG.
pub(crate) fn still(image: DynamicImage) -> Result<Thumbnail, Error> {
    let image = drop_opaque_alpha(image);
    let (width, height) = (image.width(), image.height());
    let mut bytes = Vec::new();
    let content_type = if image.color().has_alpha() {
        let encoder =
            PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive);
        encoder
            .write_image(image.as_bytes(), width, height, image.color().into())
            .map_err(error::from_encode)?;
        "image/png"
    } else {
        let encoder = JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY);
        encoder
            .write_image(image.as_bytes(), width, height, image.color().into())
            .map_err(error::from_encode)?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes,
        content_type,
        width,
        height,
        animated: false,
    })
}

/// Removes the alpha channel when every pixel is opaque.
fn drop_opaque_alpha(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageRgba8(ref rgba) if rgba.pixels().all(|p| p.0[3] == u8::MAX) => {
            DynamicImage::ImageRgb8(image.into_rgb8())
        }
        DynamicImage::ImageLumaA8(ref la) if la.pixels().all(|p| p.0[1] == u8::MAX) => {
            DynamicImage::ImageLuma8(image.into_luma8())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, Rgba, RgbaImage};

    use super::still;

    /// An RGBA image that is fully opaque becomes a JPEG; one transparent pixel keeps it PNG.
    #[test]
    fn alpha_decides_format() {
        let mut rgba = RgbaImage::from_pixel(8, 8, Rgba([10, 200, 30, 255]));
        let opaque = still(DynamicImage::ImageRgba8(rgba.clone())).unwrap();
        assert_eq!(opaque.content_type, "image/jpeg");
        rgba.put_pixel(3, 3, Rgba([0, 0, 0, 0]));
        let transparent = still(DynamicImage::ImageRgba8(rgba)).unwrap();
        assert_eq!(transparent.content_type, "image/png");
        assert_eq!((transparent.width, transparent.height), (8, 8));
    }
}
