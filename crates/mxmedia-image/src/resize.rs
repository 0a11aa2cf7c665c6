//! Resizing with `fast_image_resize` (SIMD convolution), then applying the EXIF orientation.
//!
//! Everything here works in *stored* orientation: the target is turned into stored space once, the
//! image is resized there, and only the small result is rotated, which is far cheaper than
//! rotating the source.

use fast_image_resize::{ResizeOptions, Resizer};
use image::DynamicImage;
use image::metadata::Orientation;

use crate::header::{Header, oriented};
use crate::{Error, Method, target_dims};

/// What to make of a decoded frame: its size in stored orientation, whether to crop, and the
/// orientation to apply afterwards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub width: u32,
    pub height: u32,
    pub crop: bool,
    pub orientation: Orientation,
}

impl Plan {
    /// The plan for a request against a source, sized by [`target_dims`] on the displayed size.
    pub(crate) fn new(header: &Header, req_w: u32, req_h: u32, method: Method) -> Self {
        let (disp_w, disp_h) = header.displayed();
        let (out_w, out_h) = target_dims(disp_w, disp_h, req_w, req_h, method);
        let (width, height) = oriented(header.orientation, out_w, out_h);
        Self {
            width,
            height,
            crop: method == Method::Crop,
            orientation: header.orientation,
        }
    }

    /// The output size as displayed.
    pub(crate) fn output(&self) -> (u32, u32) {
        oriented(self.orientation, self.width, self.height)
    }
}

/// Resizes `image` to the plan (cropping to its aspect ratio around the centre when asked) and
/// applies the orientation. `resizer` holds scratch buffers, so animations reuse one.
pub(crate) fn apply(
    resizer: &mut Resizer,
    image: DynamicImage,
    plan: &Plan,
) -> Result<DynamicImage, Error> {
    let mut out = if (image.width(), image.height()) == (plan.width, plan.height) {
        image
    } else {
        let mut dst = DynamicImage::new(plan.width, plan.height, image.color());
        // Scale keeps the whole frame: the plan's aspect ratio differs from it only by rounding.
        let options = if plan.crop {
            ResizeOptions::new().fit_into_destination(None)
        } else {
            ResizeOptions::new()
        };
        resizer
            .resize(&image, &mut dst, &options)
            .map_err(|e| Error::Internal(format!("resize: {e}")))?;
        dst
    };
    out.apply_orientation(plan.orientation);
    Ok(out)
}
