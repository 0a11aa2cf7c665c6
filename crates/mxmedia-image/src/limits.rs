//! Decode limits: how many pixels, frames, scans and chunks a source may declare before we refuse
//! to touch it, and how long a thumbnail may take.
//!
//! Every check here runs on header values, before any pixel buffer exists, so a decompression bomb
//! or a decoder-pinning file costs a few header reads and nothing else. The time budget is the
//! last line: the engine gives up at its next checkpoint once it is spent.

use std::time::{Duration, Instant};

use crate::Error;
use crate::header::Header;

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
    /// Scans in a JPEG. Default 100: encoders write 1 to 3 scans for a baseline file and about
    /// 10 for a progressive one (libjpeg's default script; mozjpeg's searched scripts stay under
    /// 30), while a file made to pin a decoder has thousands.
    pub max_scans: u32,
    /// Scans × pixels of a JPEG: each scan is one pass over the frame's coefficients. Default
    /// 400 000 000: a 32 Mpx frame may have 12 scans, a 12 Mpx photo 33, a 1 Mpx image all 100.
    pub max_scan_pixels: u64,
    /// JPEG marker segments, PNG or WebP chunks, or GIF blocks. Default 100 000: a 50 MiB PNG
    /// written in 8 KiB `IDAT` chunks has 6 400, a 500-frame APNG about 1 000.
    pub max_chunks: u32,
    /// How long one thumbnail may take; `None` for no limit (the default). Checked between
    /// frames of an animation and between decoding, resizing and encoding: a decoder call itself
    /// cannot be interrupted, which is why the counts above are checked first.
    pub time_budget: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 32_000_000,
            max_frames: 500,
            max_total_animated_pixels: 100_000_000,
            max_scans: 100,
            max_scan_pixels: 400_000_000,
            max_chunks: 100_000,
            time_budget: None,
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

    /// Refuses a source whose structure promises more decoding work than allowed, whatever
    /// decoder would take it: too many JPEG scans (in total, or times the frame size), or too
    /// many chunks.
    pub(crate) fn check_cost(&self, header: &Header) -> Result<(), Error> {
        if header.scans > self.max_scans {
            return Err(Error::TooCostly(format!(
                "{} JPEG scans, at most {} allowed",
                header.scans, self.max_scans
            )));
        }
        let scan_pixels = u64::from(header.scans).saturating_mul(header.frame_pixels);
        if scan_pixels > self.max_scan_pixels {
            return Err(Error::TooCostly(format!(
                "{} scans of {} pixels, at most {} scan-pixels allowed",
                header.scans, header.frame_pixels, self.max_scan_pixels
            )));
        }
        if header.chunks > self.max_chunks {
            return Err(Error::TooCostly(format!(
                "{} chunks, at most {} allowed",
                header.chunks, self.max_chunks
            )));
        }
        Ok(())
    }

    /// When a thumbnail started now must be done.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline(
            self.time_budget
                .map(|budget| (Instant::now() + budget, budget)),
        )
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

/// The end of a thumbnail's time budget, checked between steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<(Instant, Duration)>);

impl Deadline {
    /// `TimedOut` once the budget is spent.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.0 {
            Some((at, budget)) if Instant::now() >= at => Err(Error::TimedOut(budget)),
            _ => Ok(()),
        }
    }
}
