//! A RIFF chunk walker for WebP: how many chunks and animation frames (`ANMF`) a file holds,
//! read from chunk headers only.
//!
//! `image-webp` counts the frames too, but the chunk count is ours to check: every chunk costs
//! the decoder a header read and a seek, however small it is.

/// What the chunk structure of a WebP declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WebPScan {
    /// Top-level chunks inside the RIFF container, up to its declared size or the end of data.
    pub chunks: u32,
    /// `ANMF` chunks among them.
    pub frames: u32,
}

/// Walks the chunks of `src`, which starts with `RIFF....WEBP` (the sniffer checked).
pub(crate) fn scan(src: &[u8]) -> WebPScan {
    let mut info = WebPScan::default();
    // The RIFF size counts from after its own field; the walk never goes past it nor the data.
    let riff_end = le_u32(src, 4)
        .and_then(|size| usize::try_from(size).ok())
        .map_or(src.len(), |size| size.saturating_add(8).min(src.len()));
    let mut pos = 12usize;
    while pos.saturating_add(8) <= riff_end {
        let (Some(kind), Some(size)) = (src.get(pos..pos + 4), le_u32(src, pos + 4)) else {
            break;
        };
        info.chunks = info.chunks.saturating_add(1);
        if kind == b"ANMF" {
            info.frames = info.frames.saturating_add(1);
        }
        // Chunk data is padded to an even length.
        let Some(size) = usize::try_from(size).ok().map(|s| s.saturating_add(s & 1)) else {
            break;
        };
        pos = pos.saturating_add(8).saturating_add(size);
    }
    info
}

fn le_u32(src: &[u8], pos: usize) -> Option<u32> {
    let bytes = src.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests slice what they just built")]
mod tests {
    use super::{WebPScan, scan};

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let len = u32::try_from(data.len()).unwrap_or_default();
        let mut c = [kind.as_slice(), &len.to_le_bytes(), data].concat();
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body = chunks.concat();
        let size = u32::try_from(body.len() + 4).unwrap_or_default();
        [b"RIFF".as_slice(), &size.to_le_bytes(), b"WEBP", &body].concat()
    }

    /// Chunks and frames are counted, odd sizes are padded, and nothing past the RIFF size or
    /// the data is read.
    #[test]
    fn counts_chunks_and_frames() {
        let vp8x = chunk(b"VP8X", &[0x02, 0, 0, 0, 9, 0, 0, 9, 0, 0]);
        let anim = chunk(b"ANIM", &[0; 6]);
        let anmf = chunk(b"ANMF", &[0; 17]);
        let file = riff(&[vp8x, anim, anmf.clone(), anmf.clone(), anmf]);
        let expected = WebPScan {
            chunks: 5,
            frames: 3,
        };
        assert_eq!(scan(&file), expected);
        let mut trailing = file.clone();
        trailing.extend(chunk(b"ANMF", &[0; 4]));
        assert_eq!(scan(&trailing), expected);
        assert_eq!(scan(&file[..file.len() - 20]).frames, 2);
        assert_eq!(scan(b"RIFF\xff\xff\xff\xffWEBP"), WebPScan::default());
    }
}
