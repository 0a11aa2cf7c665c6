//! Reads the frame count an APNG declares (its `acTL` chunk) by walking chunk headers only.
//!
//! The `image` crate says whether a PNG is animated but not how many frames it has, and the frame
//! limit must be checked before decoding any of them.

/// The `num_frames` of the `acTL` chunk, or `None` for a still PNG. Only chunks before the first
/// `IDAT` count, as the APNG spec requires `acTL` there.
pub(crate) fn apng_frames(src: &[u8]) -> Option<u32> {
    let mut pos = 8; // PNG signature
    loop {
        let len = usize::try_from(be_u32(src, pos)?).ok()?;
        let kind = src.get(pos + 4..pos + 8)?;
        match kind {
            b"acTL" => return be_u32(src, pos + 8),
            b"IDAT" => return None,
            _ => pos = pos.checked_add(len)?.checked_add(12)?, // length, type, data, CRC
        }
    }
}

fn be_u32(src: &[u8], pos: usize) -> Option<u32> {
    let bytes = src.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::apng_frames;

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
    #[test]
    fn finds_actl_before_idat() {
        let sig = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = chunk(b"IHDR", &[0; 13]);
        let actl = chunk(b"acTL", &[0, 0, 0, 12, 0, 0, 0, 0]);
        let idat = chunk(b"IDAT", &[1, 2, 3]);
        let apng = [sig.clone(), ihdr.clone(), actl.clone(), idat.clone()].concat();
        assert_eq!(apng_frames(&apng), Some(12));
        let still = [sig.clone(), ihdr.clone(), idat.clone(), actl].concat();
        assert_eq!(apng_frames(&still), None);
        assert_eq!(apng_frames(&[sig.clone(), ihdr].concat()), None);
        assert_eq!(apng_frames(&sig), None);
    }
}
