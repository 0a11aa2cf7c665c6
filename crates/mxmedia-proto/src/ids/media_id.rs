//! `MediaId`: the opaque second half of an `mxc://` URI. The spec fixes the charset
//! (`A-Z a-z 0-9 _ -`) but no length; we cap it at 255 so IDs stay usable as file and sled keys.

use std::str::FromStr;

use rand::distr::{Alphanumeric, SampleString};

use crate::error::{Error, Result};

/// The longest media ID we accept. Not from the spec (it sets none); see [spec: mxc URIs](https://spec.matrix.org/v1.16/client-server-api/#matrix-content-mxc-uris).
pub const MAX_MEDIA_ID_LEN: usize = 255;

/// How many random characters `generate` uses: 32 of 62 symbols is about 190 bits, so IDs are
/// unguessable, which matters because legacy download endpoints serve media without auth.
const GENERATED_LEN: usize = 32;

/// A media ID matching `^[A-Za-z0-9_-]{1,255}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaId(String);

impl MediaId {
    /// A fresh random ID of 32 characters from `[A-Za-z0-9]`.
    pub fn generate() -> Self {
        Self(Alphanumeric.sample_string(&mut rand::rng(), GENERATED_LEN))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MediaId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::InvalidMediaId("empty"));
        }
        if s.len() > MAX_MEDIA_ID_LEN {
            return Err(Error::InvalidMediaId("longer than 255 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidMediaId("character outside [A-Za-z0-9_-]"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for MediaId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl std::borrow::Borrow<str> for MediaId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

super::string_newtype!(MediaId);
