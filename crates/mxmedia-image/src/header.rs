//! Header reading: format, stored size, EXIF orientation, and what drives the cost of a decode
//! (frames, scans, chunks), without decoding pixels.
//!
//! Both `probe` and `thumbnail` start here, so the limits are always checked on what the header
//! declares before a decoder is asked for a single row.

use std::io::Cursor;

use image::ImageDecoder;
use image::codecs::png::PngDecoder;
use image::metadata::Orientation;

use crate::{Error, Format, Probe, error, gif_scan, jpeg, png_scan, sniff, webp_scan};

/// Most memory the PNG header reader may take for ancillary chunks (ICC profile, text, EXIF).
const METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// What the header of a source declares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub format: Format,
    /// Size as stored, before the orientation is applied.
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// 1 for still images.
    pub frames: u32,
    /// Pixels the decoder buffers at once for one frame: the frame size, or for GIF the larger of
    /// the screen and its largest frame rectangle.
    pub frame_pixels: u64,
    /// Passes the decoder makes over a frame: the scans of a JPEG (a progressive one has one per
    /// scan), 1 for the other formats.
    pub scans: u32,
    /// Structural units the decoder parses one by one: JPEG marker segments, PNG and WebP
    /// chunks, GIF blocks.
    pub chunks: u32,
}

impl Header {
    /// The size as displayed, after the orientation is applied.
    pub(crate) fn displayed(&self) -> (u32, u32) {
        oriented(self.orientation, self.width, self.height)
    }

    pub(crate) fn animated(&self) -> bool {
        self.frames > 1
    }

    fn with_frames(self, frames: u32) -> Self {
        Self { frames, ..self }
    }

    pub(crate) fn with_cost(self, scans: u32, chunks: u32) -> Self {
        Self {
            scans,
            chunks,
            ..self
        }
    }

    pub(crate) fn probe(&self) -> Probe {
        let (width, height) = self.displayed();
        Probe {
            format: self.format,
            width,
            height,
            animated: self.animated(),
        }
    }
}

/// A `width`×`height` size after `orientation` is applied. Turning an image on its side trades
/// width and height, and doing it again trades them back, so this also maps displayed sizes back
/// to stored ones.
pub(crate) fn oriented(orientation: Orientation, width: u32, height: u32) -> (u32, u32) {
    let on_its_side = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => true,
        Orientation::NoTransforms
        | Orientation::Rotate180
        | Orientation::FlipHorizontal
        | Orientation::FlipVertical => false,
    };
    if on_its_side {
        (height, width)
    } else {
        (width, height)
    }
}

/// Sniffs the format of `src` and reads its header.
pub(crate) fn read(src: &[u8]) -> Result<Header, Error> {
    let Some(format) = sniff::format(src) else {
        return Err(Error::Unsupported);
    };
    match format {
        Format::Jpeg => jpeg::header(src),
        Format::Png => png(src),
        Format::Gif => gif(src),
        Format::WebP => webp(src),
    }
}

fn png(src: &[u8]) -> Result<Header, Error> {
    // Reading up to the first IDAT allocates no pixels, only ancillary chunks; the cap is for
    // those (a compressed iCCP or zTXt chunk can inflate far beyond its size).
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(METADATA_BYTES);
    let mut decoder =
        PngDecoder::with_limits(Cursor::new(src), limits).map_err(|e| error::from_decode(e, 0))?;
    let (width, height) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let scan = png_scan::scan(src);
    let frames = scan.frames.unwrap_or(1).max(1);
    Ok(still(Format::Png, width, height, orientation)
        .with_frames(frames)
        .with_cost(1, scan.chunks))
}

fn gif(src: &[u8]) -> Result<Header, Error> {
    let info = gif_scan::scan(src)?;
    let screen = u64::from(info.width) * u64::from(info.height);
    Ok(Header {
        frame_pixels: screen.max(info.largest_frame_pixels),
        ..still(
            Format::Gif,
            info.width,
            info.height,
            Orientation::NoTransforms,
        )
    }
    .with_frames(info.frames)
    .with_cost(1, info.blocks))
}

fn webp(src: &[u8]) -> Result<Header, Error> {
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(src))
        .map_err(|e| Error::Corrupt(format!("WebP: {e}")))?;
    let (width, height) = decoder.dimensions();
    let orientation = decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|exif| Orientation::from_exif_chunk(&exif))
        .unwrap_or(Orientation::NoTransforms);
    let frames = if decoder.is_animated() {
        // An animation flag with no frame chunk would make the decoder panic on read.
        let Some(frames) = std::num::NonZeroU32::new(decoder.num_frames()) else {
            return Err(Error::Corrupt("WebP: animation without frames".into()));
        };
        frames.get()
    } else {
        1
    };
    let scan = webp_scan::scan(src);
    Ok(still(Format::WebP, width, height, orientation)
        .with_frames(frames.max(if frames > 1 { scan.frames } else { 1 }))
        .with_cost(1, scan.chunks))
}

/// A one-frame header whose decoder buffers exactly `width`×`height`.
pub(crate) fn still(format: Format, width: u32, height: u32, orientation: Orientation) -> Header {
    Header {
        format,
        width,
        height,
        orientation,
        frames: 1,
        frame_pixels: u64::from(width) * u64::from(height),
        scans: 1,
        chunks: 1,
    }
}
