//! A GIF block walker that counts frames without decompressing any of them.
//!
//! The `gif` crate can only find the next frame by LZW-decoding (or copying) the current one, so
//! counting the frames of a hostile animation that way costs what we are trying to refuse. GIF's
//! block structure is length-prefixed, so skipping is cheap: this reads descriptors and skips data.

use crate::Error;

/// What the block structure of a GIF declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GifInfo {
    /// Logical screen size: the size of every composited frame.
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// The largest single frame rectangle in pixels: the decoder buffers one frame at that size, so
    /// it is checked against the pixel limit like the screen.
    pub largest_frame_pixels: u64,
    /// Image descriptors and extensions: each costs the decoder a parse, however small.
    pub blocks: u32,
}

/// Walks the blocks of `src`. A stream that ends early (no trailer) still counts the frames seen,
/// as decoders show truncated GIFs; a stream with no frame at all is corrupt.
pub(crate) fn scan(src: &[u8]) -> Result<GifInfo, Error> {
    let corrupt = |what: &str| Error::Corrupt(format!("GIF: {what}"));
    let mut r = Reader { src, pos: 6 };
    let width = r
        .u16()
        .ok_or_else(|| corrupt("no logical screen descriptor"))?;
    let height = r
        .u16()
        .ok_or_else(|| corrupt("no logical screen descriptor"))?;
    let packed = r
        .u8()
        .ok_or_else(|| corrupt("no logical screen descriptor"))?;
    r.skip(2); // background colour index, pixel aspect ratio
    skip_color_table(&mut r, packed);

    let (mut frames, mut largest_frame_pixels, mut blocks) = (0u32, 0u64, 0u32);
    loop {
        let block = r.u8();
        if matches!(block, Some(0x2C | 0x21)) {
            blocks = blocks.saturating_add(1);
        }
        match block {
            Some(0x2C) => {
                r.skip(4); // left, top
                let (Some(w), Some(h), Some(packed)) = (r.u16(), r.u16(), r.u8()) else {
                    break;
                };
                skip_color_table(&mut r, packed);
                r.skip(1); // LZW minimum code size
                r.skip_sub_blocks();
                frames = frames.saturating_add(1);
                largest_frame_pixels = largest_frame_pixels.max(u64::from(w) * u64::from(h));
            }
            Some(0x21) => {
                r.skip(1); // extension label
                r.skip_sub_blocks();
            }
            // The trailer, the end of the data, or junk where a block should start: decoders stop
            // there too.
            _ => break,
        }
    }
    if frames == 0 {
        return Err(corrupt("no image data"));
    }
    if width == 0 || height == 0 {
        return Err(corrupt("empty logical screen"));
    }
    Ok(GifInfo {
        width: width.into(),
        height: height.into(),
        frames,
        largest_frame_pixels,
        blocks,
    })
}

fn skip_color_table(r: &mut Reader<'_>, packed: u8) {
    if packed & 0x80 != 0 {
        r.skip(3 << ((packed & 0x07) + 1));
    }
}

/// A cursor that never reads past the end: reads past it return `None`, skips stop at the end.
struct Reader<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.src.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    fn skip(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.src.len());
    }

    /// Skips a chain of length-prefixed sub-blocks up to and including its zero-length terminator.
    fn skip_sub_blocks(&mut self) {
        while let Some(len) = self.u8() {
            if len == 0 {
                return;
            }
            self.skip(len.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{GifInfo, scan};

    /// A hand-built two-frame GIF: screen 10x5, frames 10x5 and 3x2, a global colour table, a
    /// graphic control extension, and a comment extension whose sub-blocks must be skipped.
    #[test]
    fn counts_frames_and_largest_frame() {
        let mut gif = b"GIF89a".to_vec();
        gif.extend([10, 0, 5, 0, 0x80, 0, 0]); // screen 10x5, global table of 2 entries
        gif.extend([0; 6]);
        gif.extend([0x21, 0xF9, 4, 0, 10, 0, 0, 0]); // graphic control extension
        gif.extend([0x2C, 0, 0, 0, 0, 10, 0, 5, 0, 0, 2, 2, 0x4C, 0x01, 0]);
        gif.extend([0x21, 0xFE, 3, b'a', b'b', b'c', 2, b'd', b'e', 0]); // comment
        gif.extend([
            0x2C, 1, 0, 1, 0, 3, 0, 2, 0, 0x80, 0, 0, 0, 0, 0, 0, 2, 1, 0x44, 0,
        ]);
        gif.push(0x3B);
        let info = scan(&gif).ok();
        let expected = GifInfo {
            width: 10,
            height: 5,
            frames: 2,
            largest_frame_pixels: 50,
            blocks: 4,
        };
        assert_eq!(info, Some(expected));
        // truncated after the first frame: one frame still counts
        let cut = gif.get(..40).unwrap_or_default();
        assert_eq!(scan(cut).ok().map(|i| i.frames), Some(1));
        // no frame at all
        assert!(scan(gif.get(..21).unwrap_or_default()).is_err());
        assert!(scan(b"GIF89a").is_err());
    }
}
