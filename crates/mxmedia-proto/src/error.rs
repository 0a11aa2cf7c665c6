//! The crate's one error type. Variants name what was wrong with the input, so the server can map
//! each to an HTTP answer (bad header → 400, bad signature or unknown key → 401) without string
//! matching. Messages are static, so they never echo attacker-controlled input, except `BadJson`,
//! which carries serde_json's message (it can quote part of the input): log it, but send clients
//! a fixed text.

/// Everything that can go wrong while parsing or checking Matrix protocol data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A server name outside the grammar of [spec: server names](https://spec.matrix.org/v1.16/appendices/#server-name).
    #[error("invalid server name: {0}")]
    InvalidServerName(&'static str),
    /// A media ID outside `[A-Za-z0-9_-]{1,255}`.
    #[error("invalid media id: {0}")]
    InvalidMediaId(&'static str),
    /// An `mxc://` URI that is not `mxc://<server-name>/<media-id>`.
    #[error("invalid mxc uri: {0}")]
    InvalidMxcUri(&'static str),
    /// A key ID that is not `ed25519:<version>` with version `[A-Za-z0-9_]+`.
    #[error("invalid key id: {0}")]
    InvalidKeyId(&'static str),
    /// Text that is not (unpadded) base64 in the expected alphabet.
    #[error("invalid base64")]
    BadBase64,
    /// Key material or a key file that cannot be used (wrong length, bad line, no such key).
    #[error("bad key: {0}")]
    BadKey(&'static str),
    /// An `Authorization: X-Matrix` header that does not parse ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)).
    #[error("bad X-Matrix header: {0}")]
    BadHeader(&'static str),
    /// JSON that is not of the shape the protocol requires (not an object, missing field, ...).
    #[error("bad JSON: {0}")]
    BadJson(String),
    /// JSON that has no canonical form ([spec: canonical JSON](https://spec.matrix.org/v1.16/appendices/#canonical-json)): a fraction, an out-of-range number, or
    /// nesting too deep to encode safely.
    #[error("JSON cannot be canonicalised: {0}")]
    NotCanonical(&'static str),
    /// The object carries no signature by the expected entity and key.
    #[error("no signature by the expected server and key")]
    MissingSignature,
    /// A signature is present but does not verify (or is not 64 bytes of base64).
    #[error("signature does not verify")]
    BadSignature,
    /// The key named by a signature or header is not among the server's current verify keys.
    #[error("unknown signing key")]
    UnknownKey,
    /// The key (or key response) is past its validity.
    #[error("signing key expired")]
    KeyExpired,
    /// A key response names a different server than the one that was asked.
    #[error("server name mismatch")]
    ServerNameMismatch,
    /// An X-Matrix `destination` that is not our server name ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication): answer 401).
    #[error("request is addressed to another server")]
    WrongDestination,
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
