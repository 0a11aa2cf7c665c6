//! Decode limits: how many pixels and frames a source may declare before we refuse to touch it.
//!
//! Every check here runs on header values, before any pixel buffer exists, so a decompression bomb
//! costs a few header reads and nothing else.

use crate::Error;

/// Caps on what a source image may declare. Checked against the header before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Pixels in one frame (width × height, as stored). Default 32 000 000, as Synapse's
    /// `max_image_pixels`: a 32 Mpx RGBA frame is 128 MiB decoded.
    pub max_pixels: u64,
    /// Frames in an animation that is rendered as an animation. Default 500.
    pub max_frames: u32,
    /// frames × width × height of an animated source rendered as an animation. Default 100 000 000:
    /// decoding time grows with it even though only one frame is held at a time.
    pub max_total_animated_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 32_000_000,
            max_frames: 500,
            max_total_animated_pixels: 100_000_000,
        }
    }
}

impl Limits {
    /// Refuses a single frame of `pixels` pixels.
    pub(crate) fn check_frame(&self, pixels: u64) -> Result<(), Error> {
        if pixels > self.max_pixels {
            return Err(Error::TooLarge { pixels });
        }
        Ok(())
    }

    /// Refuses an animation of `frames` frames of `frame_pixels` pixels each.
    pub(crate) fn check_animation(&self, frames: u32, frame_pixels: u64) -> Result<(), Error> {
        if frames > self.max_frames {
            return Err(Error::TooManyFrames { frames });
        }
        let total = u64::from(frames).saturating_mul(frame_pixels);
        if total > self.max_total_animated_pixels {
            return Err(Error::TooLarge { pixels: total });
        }
        Ok(())
    }

    /// The allocation cap handed to the `image` decoders as a second line of defence: room for one
    /// frame at 16 bits per RGBA channel plus decoder scratch space.
    pub(crate) fn image_limits(&self) -> image::Limits {
        const SCRATCH: u64 = 64 * 1024 * 1024;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(SCRATCH));
        limits
    }
}
