//! Matrix's "unpadded base64" ([spec: unpadded base64](https://spec.matrix.org/v1.16/appendices/#unpadded-base64)): the standard RFC 4648 alphabet with `=` stripped.
//! Encoding never pads; decoding accepts both padded and unpadded input, as the spec says decoders
//! SHOULD. The URL-safe alphabet is a separate variant in Matrix (used by event IDs, not by keys or
//! signatures), so it has its own functions instead of being guessed at.

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

use crate::error::{Error, Result};

/// Non-zero trailing bits are allowed because the spec's own test-vector seed ([cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors),
/// `...MW+3XA1`) has them, and Python's decoder, which Synapse uses, ignores them.
const DECODE_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_DECODE: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, DECODE_CONFIG);
const URL_SAFE_DECODE: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, DECODE_CONFIG);

/// Unpadded standard base64, as used for keys, signatures and hashes.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64 with or without `=` padding.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>> {
    STANDARD_DECODE.decode(text).map_err(|_| Error::BadBase64)
}

/// Unpadded URL-safe base64 (`-` and `_` for `+` and `/`).
pub fn encode_url_safe(bytes: impl AsRef<[u8]>) -> String {
    general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe base64 with or without `=` padding.
pub fn decode_url_safe(text: impl AsRef<[u8]>) -> Result<Vec<u8>> {
    URL_SAFE_DECODE.decode(text).map_err(|_| Error::BadBase64)
}

/// Decodes into exactly `N` bytes (keys, seeds, signatures), refusing any other length.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Result<[u8; N]> {
    decode(text)?.try_into().map_err(|_| Error::BadBase64)
}

#[cfg(test)]
mod tests;
