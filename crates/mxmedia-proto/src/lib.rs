//! Matrix federation protocol primitives for mxmedia: validated identifiers (server names, media
//! IDs, `mxc://` URIs), unpadded base64, canonical JSON, ed25519 JSON signing, the `X-Matrix`
//! request authentication header, server key responses, the pure steps of server discovery, and the bounded framing of
//! federation media's `multipart/mixed` answers.
//!
//! Everything here is synchronous and does no I/O: the HTTP server and federation client own the
//! network, clocks are passed in as `now_ms`, and this crate only decides what bytes mean. The docs
//! link the sections of the public spec (<https://spec.matrix.org/v1.16/>) they implement.
//!
//! Signing an outgoing federation request and checking it on the other side:
//!
//! ```
//! use mxmedia_proto::{RequestParts, ServerName, SigningKey, XMatrix, sign_request, verify_request};
//!
//! # fn main() -> mxmedia_proto::Result<()> {
//! let ours: ServerName = "media.example.org".parse()?;
//! let remote: ServerName = "remote.example.com".parse()?;
//! let key = SigningKey::generate("mxmedia1")?;
//! let uri = "/_matrix/federation/v1/media/download/abc123?timeout_ms=20000";
//! let request = RequestParts { method: "GET", uri, origin: &ours, destination: &remote, content: None };
//! let header = sign_request(&request, &key)?.to_string(); // the `Authorization` value
//!
//! // On `remote`: parse the header, look up `auth.key` in `ours`'s validated ServerKeys, verify.
//! let auth = XMatrix::parse(&header)?;
//! verify_request(&auth, &remote, "GET", uri, None, &key.verify_key())?;
//! # Ok(())
//! # }
//! ```

pub mod base64;
pub mod canonical_json;
pub mod discovery;
mod error;
pub mod ids;
pub mod keys;
pub mod multipart;
pub mod server_keys;
pub mod signing;
pub mod x_matrix;

#[cfg(test)]
mod test_vectors;

pub use canonical_json::canonical_json;
pub use error::{Error, Result};
pub use ids::{HostKind, MediaId, MxcUri, ServerName};
pub use keys::{KeyId, Signature, SigningKey, VerifyKey};
pub use server_keys::{ServerKeys, build_server_keys_response, validate_server_keys};
pub use signing::{sign_json, verify_json};
pub use x_matrix::{RequestParts, XMatrix, sign_request, verify_request};
