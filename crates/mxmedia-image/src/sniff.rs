//! Format detection from magic bytes. The declared Content-Type of an upload is never trusted.

use crate::Format;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The format the bytes start like, or `None` when they match none of ours.
pub(crate) fn format(src: &[u8]) -> Option<Format> {
    if src.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if src.starts_with(PNG_SIGNATURE) {
        Some(Format::Png)
    } else if src.starts_with(b"GIF87a") || src.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if src.starts_with(b"RIFF") && src.get(8..12) == Some(b"WEBP".as_slice()) {
        Some(Format::WebP)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::format;
    use crate::Format;

    /// Each magic maps to its format, and near misses map to nothing.
    #[test]
    fn magics() {
        assert_eq!(format(b"\xFF\xD8\xFF\xE0rest"), Some(Format::Jpeg));
        assert_eq!(format(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(format(b"GIF89a...."), Some(Format::Gif));
        assert_eq!(format(b"GIF87a...."), Some(Format::Gif));
        assert_eq!(format(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(format(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(format(b"\xFF\xD8"), None);
        assert_eq!(format(b"<svg"), None);
        assert_eq!(format(b""), None);
    }
}
