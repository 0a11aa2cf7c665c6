//! Animated thumbnails: every frame of a GIF, WebP or APNG source resized into an animated GIF.
//!
//! Frames are streamed: one composited source frame, one resized frame and the growing output are
//! alive at a time, never the whole decoded animation. The frame count and total pixels were
//! checked on the header; both are checked again here in case the header undercounted, and so is
//! the time budget, between frames.

use std::io::Cursor;

use fast_image_resize::Resizer;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::LoopCount;
use image::{AnimationDecoder, DynamicImage, Frame, Frames, ImageDecoder};

use crate::header::Header;
use crate::limits::Deadline;
use crate::resize::{self, Plan};
use crate::{Error, Format, Limits, Thumbnail, error};

/// Quantiser speed for the GIF encoder (1 best .. 30 fastest): NeuQuant learns from every
/// `speed`-th pixel, so 10 trains the palette on a tenth of the pixels the default 1 uses; small
/// frames have few enough colours that this does not show.
const GIF_SPEED: i32 = 10;

/// Renders an animated source as an animated GIF, or returns `None` when the format cannot animate
/// (the caller then makes a still thumbnail).
pub(crate) fn render(
    src: &[u8],
    header: &Header,
    plan: &Plan,
    limits: &Limits,
    deadline: &Deadline,
) -> Result<Option<Thumbnail>, Error> {
    let Some((frames, loop_count)) = open(src, header, limits)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    let mut count = 0u32;
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_SPEED);
        encoder
            .set_repeat(repeat(loop_count))
            .map_err(error::from_encode)?;
        let mut resizer = Resizer::new();
        for frame in frames {
            let frame = match frame {
                Ok(frame) => frame,
                // A truncated animation keeps the frames that decoded, as viewers show it.
                Err(_) if count > 0 => break,
                Err(e) => return Err(error::from_decode(e, header.frame_pixels)),
            };
            count += 1;
            if count > limits.max_frames {
                return Err(Error::TooManyFrames { frames: count });
            }
            // The header may have undercounted; the work done so far is what counts.
            let pixels = u64::from(count).saturating_mul(header.frame_pixels);
            if pixels > limits.max_total_animated_pixels {
                return Err(Error::TooLarge { pixels });
            }
            deadline.check()?;
            let delay = frame.delay();
            let image = DynamicImage::ImageRgba8(frame.into_buffer());
            let small = resize::apply(&mut resizer, image, plan)?.into_rgba8();
            encoder
                .encode_frame(Frame::from_parts(small, 0, 0, delay))
                .map_err(error::from_encode)?;
        }
    }
    if count == 0 {
        return Err(Error::Corrupt("animation without frames".into()));
    }
    let (width, height) = plan.output();
    Ok(Some(Thumbnail {
        bytes,
        content_type: "image/gif",
        width,
        height,
        animated: count > 1,
    }))
}

/// The frame iterator of an animated source, each frame composited to the full canvas.
fn open<'a>(
    src: &'a [u8],
    header: &Header,
    limits: &Limits,
) -> Result<Option<(Frames<'a>, LoopCount)>, Error> {
    let cursor = Cursor::new(src);
    let decode_err = |e| error::from_decode(e, header.frame_pixels);
    let opened = match header.format {
        Format::Jpeg => return Ok(None),
        Format::Gif => {
            let mut decoder = GifDecoder::new(cursor).map_err(decode_err)?;
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_err)?;
            let loop_count = decoder.loop_count();
            (decoder.into_frames(), loop_count)
        }
        Format::WebP => {
            let mut decoder = WebPDecoder::new(cursor).map_err(decode_err)?;
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_err)?;
            let loop_count = decoder.loop_count();
            (decoder.into_frames(), loop_count)
        }
        Format::Png => {
            let decoder =
                PngDecoder::with_limits(cursor, limits.image_limits()).map_err(decode_err)?;
            let decoder = decoder.apng().map_err(decode_err)?;
            let loop_count = decoder.loop_count();
            (decoder.into_frames(), loop_count)
        }
    };
    Ok(Some(opened))
}

fn repeat(loop_count: LoopCount) -> Repeat {
    match loop_count {
        LoopCount::Infinite => Repeat::Infinite,
        LoopCount::Finite(n) => Repeat::Finite(u16::try_from(n.get()).unwrap_or(u16::MAX)),
    }
}
