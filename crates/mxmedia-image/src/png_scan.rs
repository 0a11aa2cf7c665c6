//! A PNG chunk walker: the frame count an APNG declares and has, and the number of chunks, read
//! from chunk headers only.
//!
//! The `image` crate says whether a PNG is animated but not how many frames it has, and the frame
//! limit must be checked before decoding any of them. The declared count (`acTL`) is not trusted
//! alone: every `fcTL` is a frame the decoder will composite, so the larger of the two counts.
//! Chunks are counted because each costs the decoder a parse and a CRC, however small it is.

/// What the chunk structure of a PNG declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PngScan {
    /// The larger of the `acTL` frame count and the number of `fcTL` chunks; `None` for a still
    /// PNG (no `acTL` before the first `IDAT`, as the APNG spec requires).
    pub frames: Option<u32>,
    /// Chunks up to `IEND` or the end of the data.
    pub chunks: u32,
}

/// Walks the chunks of `src`, which starts with the PNG signature (the sniffer checked).
pub(crate) fn scan(src: &[u8]) -> PngScan {
    let mut info = PngScan::default();
    let (mut declared, mut controls, mut seen_idat) = (None, 0u32, false);
    let mut pos = 8; // PNG signature
    while let Some(len) = be_u32(src, pos).and_then(|l| usize::try_from(l).ok()) {
        let Some(kind) = src.get(pos + 4..pos + 8) else {
            break;
        };
        info.chunks = info.chunks.saturating_add(1);
        match kind {
            b"acTL" if !seen_idat => declared = be_u32(src, pos + 8),
            b"fcTL" => controls = controls.saturating_add(1),
            b"IDAT" => seen_idat = true,
            b"IEND" => break,
            _ => {}
        }
        // length, type, data, CRC
        let Some(next) = pos.checked_add(len).and_then(|p| p.checked_add(12)) else {
            break;
        };
        pos = next;
    }
    info.frames = declared.map(|d| d.max(controls));
    info
}

fn be_u32(src: &[u8], pos: usize) -> Option<u32> {
    let bytes = src.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::scan;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = u32::try_from(data.len())
            .unwrap_or_default()
            .to_be_bytes()
            .to_vec();
        c.extend(kind);
        c.extend(data);
        c.extend([0; 4]); // CRC, not checked here
        c
    }

    /// `acTL` before `IDAT` gives its frame count; after `IDAT`, or absent, the PNG is still.
    /// Chunks are counted up to the end.
    #[test]
    fn finds_actl_before_idat() {
        let sig = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = chunk(b"IHDR", &[0; 13]);
        let actl = chunk(b"acTL", &[0, 0, 0, 12, 0, 0, 0, 0]);
        let idat = chunk(b"IDAT", &[1, 2, 3]);
        let apng = [sig.clone(), ihdr.clone(), actl.clone(), idat.clone()].concat();
        assert_eq!(scan(&apng).frames, Some(12));
        assert_eq!(scan(&apng).chunks, 3);
        let still = [sig.clone(), ihdr.clone(), idat.clone(), actl.clone()].concat();
        assert_eq!(scan(&still).frames, None);
        assert_eq!(scan(&[sig.clone(), ihdr.clone()].concat()).frames, None);
        assert_eq!(scan(&sig), super::PngScan::default());
        // More frame controls than declared: the controls count.
        let fctl = chunk(b"fcTL", &[0; 26]);
        let mut lying = [sig, ihdr, actl, idat].concat();
        for _ in 0..20 {
            lying.extend(&fctl);
        }
        assert_eq!(scan(&lying).frames, Some(20));
        assert_eq!(scan(&lying).chunks, 23);
    }
}
