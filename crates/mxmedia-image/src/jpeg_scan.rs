//! A JPEG marker walker that counts scans without decoding any of them.
//!
//! A progressive JPEG is decoded scan by scan, and every scan is one pass over the coefficients
//! of its components, however little data it carries: an end-of-band run skips 32 767 blocks in
//! a few bits. So a file of a few kilobytes can hold thousands of scans that each cost a full
//! pass over a large image. libjpeg-turbo can be told a scan limit; `jpeg-decoder` (our fallback
//! for CMYK, lossless and whatever turbo refuses) cannot. Counting the `SOS` markers first lets
//! every path refuse such a file before either decoder runs.
//!
//! The walk finds markers the way both decoders do (ITU T.81 B.1.1.2): bytes before an `0xFF`
//! are skipped, fill bytes `0xFF` are skipped, `0xFF 0x00` is stuffed entropy-coded data, and
//! every other marker but `SOI`, `EOI`, `TEM` and `RSTn` carries a length that is skipped whole.
//! Entropy-coded data needs no parsing: it cannot contain a marker, so walking it byte by byte
//! to the next marker is what the decoders do too. The walk stops at `EOI`, as they do.

/// What the marker structure of a JPEG declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct JpegScan {
    /// `SOS` markers before `EOI` (or the end of the data).
    pub scans: u32,
    /// Marker segments of any kind: each costs the decoders a parse.
    pub segments: u32,
}

/// Walks the markers of `src`, which starts with `SOI` (the sniffer checked).
pub(crate) fn scan(src: &[u8]) -> JpegScan {
    let mut info = JpegScan::default();
    let mut pos = 2; // SOI
    loop {
        // Up to and past the next 0xFF, then past fill bytes.
        let Some(ff) = src
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
        else {
            return info;
        };
        pos += ff + 1;
        while src.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = src.get(pos) else {
            return info;
        };
        pos += 1;
        match marker {
            // Stuffed data inside a scan, and the markers without a length.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            0xD9 => return info, // EOI
            _ => {}
        }
        info.segments = info.segments.saturating_add(1);
        if marker == 0xDA {
            info.scans = info.scans.saturating_add(1);
        }
        let Some(&[hi, lo]) = src.get(pos..pos + 2) else {
            return info;
        };
        // The length counts its own two bytes; a smaller one is corrupt, and the decoders fail
        // on it, so stepping past the length bytes alone is as good as any choice.
        pos += usize::from(u16::from_be_bytes([hi, lo])).max(2);
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests slice what they just built")]
mod tests {
    use super::{JpegScan, scan};

    /// A segment of `marker` with `data`.
    fn segment(marker: u8, data: &[u8]) -> Vec<u8> {
        let len = u16::try_from(data.len() + 2).unwrap_or_default();
        [&[0xFF, marker][..], &len.to_be_bytes(), data].concat()
    }

    /// Scans are counted through entropy-coded data with stuffed bytes, restart markers and fill
    /// bytes; a marker-like pair inside a segment is skipped with it; the walk stops at EOI.
    #[test]
    fn counts_scans() {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xE1, &[0xFF, 0xDA, 0, 4, 0xFF, 0xDA])); // fake SOS in APP1
        jpeg.extend(segment(0xC2, &[8, 0, 16, 0, 16, 1, 1, 0x11, 0]));
        for _ in 0..3 {
            jpeg.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
            jpeg.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF]);
        }
        jpeg.extend(segment(0xC4, &[0; 17]));
        jpeg.extend([0xFF, 0xD9]);
        let expected = JpegScan {
            scans: 3,
            segments: 6,
        };
        assert_eq!(scan(&jpeg), expected);
        // Anything after EOI is not looked at; a truncated file counts what it has.
        jpeg.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        assert_eq!(scan(&jpeg), expected);
        assert_eq!(scan(&jpeg[..40]).scans, 1);
        assert_eq!(scan(&[0xFF, 0xD8]), JpegScan::default());
        // A zero length cannot make the walk stand still.
        assert_eq!(scan(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 0, 0xFF, 0xDA]).scans, 2);
    }
}
