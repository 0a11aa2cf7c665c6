//! The `[thumbnails]` section: the thumbnailer pool, the sizes served and the bounds on what a
//! source may cost to decode.

use bytesize::ByteSize;
use mxmedia_image::Method;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailConfig {
    /// Threads that decode and resize. 0 = one per core.
    pub workers: usize,
    /// Jobs that may wait for a thread; past this, requests get 429 with `retry_after_ms`.
    pub queue: usize,
    /// The sizes served. A request gets the smallest one at least as large as asked for
    /// (default: the spec's recommended set).
    pub sizes: Vec<ThumbnailSize>,
    /// Render any requested size instead of the nearest configured one. Off by default: it lets
    /// clients make the server render and store arbitrarily many sizes.
    pub dynamic: bool,
    /// Make animated thumbnails when clients ask (`animated=true`).
    pub animated: bool,
    /// Largest source, in pixels per frame, that is decoded. Default 32 Mpx.
    pub max_source_pixels: u64,
    /// Most frames an animated source may have. Default 500.
    pub max_frames: u32,
    /// Most pixels over all frames of an animated source. Default 100 Mpx.
    pub max_animated_pixels: u64,
    /// Largest source file thumbnailed. Default 50 MiB.
    pub max_source_size: ByteSize,
    /// Longest one thumbnail job may run, in seconds (fractions allowed, at least 0.01).
    /// Default 20: a cold thumbnail of a 32 Mpx photo takes well under a second. Past it the
    /// request gets 413 `M_TOO_LARGE`, the thread is replaced, and the source is remembered as
    /// failed.
    pub job_timeout_secs: f64,
    /// How long a source that could not be thumbnailed (over the time budget, too costly,
    /// corrupt) is answered from memory instead of being decoded again, in seconds. Default 600.
    pub failure_cache_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    #[serde(with = "method")]
    pub method: Method,
}

/// `crop` or `scale`, spelled by `Method` itself; other names fail as an unknown variant would.
mod method {
    use mxmedia_image::Method;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(method: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(method.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|_| D::Error::unknown_variant(&name, &["crop", "scale"]))
    }
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            queue: 64,
            sizes: [
                (32, 32, Method::Crop),
                (96, 96, Method::Crop),
                (320, 240, Method::Scale),
                (640, 480, Method::Scale),
                (800, 600, Method::Scale),
            ]
            .into_iter()
            .map(|(width, height, method)| ThumbnailSize {
                width,
                height,
                method,
            })
            .collect(),
            dynamic: false,
            animated: true,
            max_source_pixels: 32_000_000,
            max_frames: 500,
            max_animated_pixels: 100_000_000,
            max_source_size: ByteSize::mib(50),
            job_timeout_secs: 20.0,
            failure_cache_secs: 600,
        }
    }
}
