//! The `[metrics]` section: the optional Prometheus listener.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address for the Prometheus `/metrics` listener, e.g. `127.0.0.1:9090`. Unset: off.
    pub listen: Option<SocketAddr>,
}
