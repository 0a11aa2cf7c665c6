//! The S3 engine the S3 tests run against, whichever it is: Garage (`garage`, the default) or
//! SeaweedFS (`seaweed`), chosen with `MXMEDIA_TEST_S3_ENGINE=garage|seaweedfs`. A test asks
//! for `shared()` (one per test process, each test server under a prefix of its own) or
//! `Engine::start()` (one of its own, to stop and restart), and never names the engine unless
//! it tests how engines differ.

use std::sync::OnceLock;

use mxmedia::config::S3Config;

use crate::{garage::Garage, seaweed::SeaweedFs};

/// Which engine this run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Garage,
    SeaweedFs,
}

/// `MXMEDIA_TEST_S3_ENGINE`; anything but the two names is a mistake, said at once.
pub fn kind() -> Kind {
    match std::env::var("MXMEDIA_TEST_S3_ENGINE").as_deref() {
        Err(_) | Ok("" | "garage") => Kind::Garage,
        Ok("seaweedfs") => Kind::SeaweedFs,
        Ok(other) => panic!("MXMEDIA_TEST_S3_ENGINE={other:?}: expected garage or seaweedfs"),
    }
}

pub enum Engine {
    Garage(Garage),
    SeaweedFs(SeaweedFs),
}

/// The engine this test process shares.
pub fn shared() -> &'static Engine {
    static SHARED: OnceLock<Engine> = OnceLock::new();
    SHARED.get_or_init(Engine::start)
}

impl Engine {
    /// Starts the chosen engine with the test key and bucket, and waits until it serves.
    pub fn start() -> Self {
        match kind() {
            Kind::Garage => Self::Garage(Garage::start()),
            Kind::SeaweedFs => Self::SeaweedFs(SeaweedFs::start()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Garage(_) => Kind::Garage,
            Self::SeaweedFs(_) => Kind::SeaweedFs,
        }
    }

    /// `http://127.0.0.1:<port>` of its S3 API.
    pub fn endpoint(&self) -> &str {
        match self {
            Self::Garage(g) => &g.endpoint,
            Self::SeaweedFs(s) => &s.endpoint,
        }
    }

    /// The region requests must be signed for.
    pub fn region(&self) -> &'static str {
        match self {
            Self::Garage(_) => crate::garage::REGION,
            Self::SeaweedFs(_) => crate::seaweed::REGION,
        }
    }

    /// Whether a request signed for another region is refused: Garage refuses it, SeaweedFS
    /// accepts any.
    pub fn enforces_region(&self) -> bool {
        self.kind() == Kind::Garage
    }

    /// The `[store.s3]` of a test server using this engine, under a fresh prefix.
    pub fn config(&self) -> S3Config {
        match self {
            Self::Garage(g) => g.config(),
            Self::SeaweedFs(s) => s.config(),
        }
    }

    /// Kills the engine at once (SIGKILL), as a crash or a pulled cable would.
    pub fn stop(&self) {
        match self {
            Self::Garage(g) => g.stop(),
            Self::SeaweedFs(s) => s.stop(),
        }
    }

    /// Starts it again on the same ports and data, and waits until the bucket works.
    pub fn resume(&self) {
        match self {
            Self::Garage(g) => g.resume(),
            Self::SeaweedFs(s) => s.resume(),
        }
    }
}
