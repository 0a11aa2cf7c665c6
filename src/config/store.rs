//! The `[store]` section: sled's cache, the free-space floor, where blobs live and the blob
//! memory cache. `FreeSpace` is the parsed form of `min_free_space`.

use bytesize::ByteSize;
use num_traits::ToPrimitive as _;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Largest sled value whose tree node sled's page cache still counts. A node holds up to 17
/// entries and is written "as a blob" once it exceeds a quarter of sled's 512 KiB segment; sled
/// then counts it as the few bytes of its pointer, so the cache never evicts it and memory grows
/// with the database (sled 0.34, `pagecache/logger.rs`). 17 × (7 KiB + key) stays under 128 KiB.
pub const SLED_CACHEABLE_VALUE_MAX: u64 = 7 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// sled's page cache, in bytes or as `"64MiB"`. Default 32 MiB, suited to a 1 GB VPS.
    pub cache_capacity: ByteSize,
    /// Uploads and remote fetches are refused (507) when free space on the data dir's file
    /// system, less the bytes of uploads and fetches still arriving, would drop below this:
    /// bytes, `"1GiB"`, or a share of the disk such as `"5%"`. Default `1GiB`.
    pub min_free_space: FreeSpace,
    /// Blobs up to this size live inside sled; larger ones are content-addressed files under
    /// `data_dir/blobs`. Default 4 KiB. Keep it at most [`SLED_CACHEABLE_VALUE_MAX`] (7 KiB):
    /// sled's page cache cannot count, so never evicts, tree nodes holding larger values, and
    /// memory then grows with the database (see the README's storage section).
    pub inline_blob_max: ByteSize,
    /// Memory for caching small blobs (those kept in sled) in front of the store, so hot media
    /// is served without touching the database. 0 turns it off. Default 32 MiB.
    pub memory_cache: ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity: ByteSize::mib(32),
            min_free_space: FreeSpace::Bytes(ByteSize::gib(1).as_u64()),
            inline_blob_max: ByteSize::kib(4),
            memory_cache: ByteSize::mib(32),
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let FreeSpace::Percent(p) = self.min_free_space
            && !(0.0..100.0).contains(&p)
        {
            return Err(ConfigError::invalid(
                "MXMEDIA_STORE__MIN_FREE_SPACE",
                "percentage must be in 0..100",
            ));
        }
        Ok(())
    }
}

/// A free-space floor: an absolute size or a percentage of the file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreeSpace {
    Bytes(u64),
    Percent(f64),
}

impl Serialize for FreeSpace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bytes(b) => s.serialize_str(&ByteSize::b(*b).display().iec().to_string()),
            Self::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(b) => Ok(Self::Bytes(b)),
            Raw::Str(s) => {
                if let Some(p) = s.trim().strip_suffix('%') {
                    p.trim()
                        .parse::<f64>()
                        .map(Self::Percent)
                        .map_err(|_| serde::de::Error::custom(format!("bad percentage {s:?}")))
                } else {
                    s.parse::<ByteSize>()
                        .map(|b| Self::Bytes(b.as_u64()))
                        .map_err(|e| serde::de::Error::custom(format!("bad size {s:?}: {e}")))
                }
            }
        }
    }
}

impl FreeSpace {
    /// The floor in bytes for a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Self::Bytes(b) => b,
            // Percentages of real disks fit f64 exactly enough; truncation is harmless here. A
            // result outside u64 (only a NaN or negative share could give one) means no reserve.
            Self::Percent(p) => total
                .to_f64()
                .and_then(|total| (total * p / 100.0).to_u64())
                .unwrap_or(0),
        }
    }
}
