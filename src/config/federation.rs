//! The `[federation]` section: how outgoing federation requests are made and bounded (denylist,
//! TLS, DNS, timeouts), our signing key, and the notaries trusted for other servers' keys.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use mxmedia_proto::{
    ids::ServerName,
    keys::{KeyId, VerifyKey},
};
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Outgoing federation requests (server keys, remote media, `.well-known`) never go to these
    /// address ranges, checked after DNS resolution. Default: loopback, private, link-local,
    /// CGNAT, multicast, documentation and reserved ranges, and their IPv6 equivalents.
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    /// Check remote servers' TLS certificates. Turn off only for closed test federations.
    pub verify_tls: bool,
    /// Extra trusted CA certificates (PEM), for private federations and tests.
    pub ca_file: Option<PathBuf>,
    /// DNS servers to ask (`ip:port`); empty = the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Seconds to wait for a remote server to accept a connection. Default 10.
    pub connect_timeout_secs: u64,
    /// Seconds a whole outgoing request may take, headers and body. Default 60.
    pub request_timeout_secs: u64,
    /// The homeserver's signing key file (Synapse format: `ed25519 <version> <base64 seed>` per
    /// line). Unset: mxmedia uses `data_dir/signing.key`, generating it on first start; remote
    /// servers accept it only once the homeserver publishes it (see the README).
    pub signing_key_path: Option<PathBuf>,
    /// Which key of the file to sign with, e.g. `ed25519:a_AbCd`. Default: the first.
    #[serde(default, deserialize_with = "signing_key_id")]
    pub signing_key_id: Option<KeyId>,
    /// Serve `GET /_matrix/key/v2/server` with our key, for deployments where mxmedia answers
    /// federation itself. Off by default: normally the homeserver publishes the keys.
    pub serve_server_keys: bool,
    /// Notary servers asked for a remote server's keys when the server itself cannot be
    /// reached: server names (trusted on first contact), or `{ server_name, verify_keys }`
    /// tables pinning their keys (`verify_keys = { "ed25519:auto" = "<base64>" }`).
    pub trusted_key_servers: Vec<TrustedKeyServer>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            ip_range_denylist: DEFAULT_IP_RANGE_DENYLIST
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            verify_tls: true,
            ca_file: None,
            nameservers: Vec::new(),
            connect_timeout_secs: 10,
            request_timeout_secs: 60,
            signing_key_path: None,
            signing_key_id: None,
            serve_server_keys: false,
            trusted_key_servers: Vec::new(),
        }
    }
}

fn signing_key_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyId>, D::Error> {
    Option::<SigningKeyId>::deserialize(d).map(|id| id.map(|SigningKeyId(id)| id))
}

struct SigningKeyId(KeyId);

impl<'de> Deserialize<'de> for SigningKeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::parse_named(
            d,
            "MXMEDIA_FEDERATION__SIGNING_KEY_ID",
            "must be an ed25519 key id like ed25519:a_AbCd",
        )
        .map(Self)
    }
}

/// A notary whose signature on another server's keys is trusted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "TrustedKeyServerRaw", into = "TrustedKeyServerTable")]
pub struct TrustedKeyServer {
    pub server_name: ServerName,
    /// Pinned keys. Empty: fetch the notary's keys from it directly.
    pub verify_keys: BTreeMap<KeyId, VerifyKey>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TrustedKeyServerRaw {
    Name(String),
    Table(TrustedKeyServerTable),
}

/// The written form: key id -> unpadded base64 public key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeyServerTable {
    server_name: String,
    #[serde(default)]
    verify_keys: BTreeMap<String, String>,
}

impl TryFrom<TrustedKeyServerRaw> for TrustedKeyServer {
    type Error = String;

    fn try_from(raw: TrustedKeyServerRaw) -> Result<Self, String> {
        let refuse = |reason: &str| {
            format!("invalid value for MXMEDIA_FEDERATION__TRUSTED_KEY_SERVERS: {reason}")
        };
        let (server_name, verify_keys) = match raw {
            TrustedKeyServerRaw::Name(server_name) => (server_name, BTreeMap::new()),
            TrustedKeyServerRaw::Table(t) => (t.server_name, t.verify_keys),
        };
        Ok(Self {
            server_name: server_name
                .parse()
                .map_err(|_| refuse("server_name must be a Matrix server name"))?,
            verify_keys: verify_keys
                .iter()
                .map(|(id, key)| Some((id.parse().ok()?, VerifyKey::from_base64(key).ok()?)))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    refuse("verify_keys must map ed25519 key ids to base64 public keys")
                })?,
        })
    }
}

impl From<TrustedKeyServer> for TrustedKeyServerTable {
    fn from(t: TrustedKeyServer) -> Self {
        Self {
            server_name: t.server_name.as_str().to_owned(),
            verify_keys: t
                .verify_keys
                .iter()
                .map(|(id, key)| (id.as_str().to_owned(), key.to_base64()))
                .collect(),
        }
    }
}

/// The ranges no outgoing request may reach unless the admin says otherwise.
pub const DEFAULT_IP_RANGE_DENYLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];
