//! Federation request authentication ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)): the `Authorization: X-Matrix` header as a typed
//! value, the JSON object a request signature covers, and signing/verifying a request with it.
//! Key lookup and expiry live in `server_keys`; choosing which `Authorization` header to read and
//! mapping errors to HTTP statuses is the server's job.

mod parse;

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ids::ServerName;
use crate::keys::{KeyId, Signature, SigningKey, VerifyKey};
use crate::signing::signing_bytes;

pub use parse::{SCHEME, is_x_matrix};

/// A parsed `X-Matrix` credential. `destination` is optional because [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) tells receivers
/// to accept requests from servers older than v1.3 that omit it; we always send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// The sending server.
    pub origin: ServerName,
    /// The server the request is for, when the sender named it.
    pub destination: Option<ServerName>,
    /// The origin's key that made `sig`.
    pub key: KeyId,
    /// The signature over the request JSON ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)).
    pub sig: Signature,
}

impl XMatrix {
    /// Parses an `Authorization` header value such as
    /// `X-Matrix origin="a.example",destination="b.example",key="ed25519:1",sig="..."`.
    ///
    /// Names are case-insensitive and may come in any order; unknown ones are ignored;
    /// `signature` is accepted for `sig` (the spec's prose uses it, its example and every server
    /// use `sig`); any parameter given twice, or both `sig` and `signature`, is an error.
    pub fn parse(header: &str) -> Result<Self> {
        let mut origin = None;
        let mut destination = None;
        let mut key = None;
        let mut sig = None;
        for (name, value) in parse::parse_params(header)? {
            let slot = match name.as_str() {
                "origin" => &mut origin,
                "destination" => &mut destination,
                "key" => &mut key,
                "sig" | "signature" => &mut sig,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Error::BadHeader("both sig and signature given"));
            }
        }
        let (Some(origin), Some(key), Some(sig)) = (origin, key, sig) else {
            return Err(Error::BadHeader("origin, key and sig are required"));
        };
        Ok(Self {
            origin: origin
                .parse()
                .map_err(|_| Error::BadHeader("origin is not a valid server name"))?,
            destination: destination
                .map(|d| d.parse())
                .transpose()
                .map_err(|_| Error::BadHeader("destination is not a valid server name"))?,
            key: key
                .parse()
                .map_err(|_| Error::BadHeader("key is not an ed25519 key id"))?,
            sig: Signature::from_base64(&sig)
                .map_err(|_| Error::BadHeader("sig is not base64 of 64 bytes"))?,
        })
    }
}

impl FromStr for XMatrix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// The header value, in the form [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) tells senders to use: one space after the scheme,
/// lower-case names, quoted values, no whitespace around commas.
impl fmt::Display for XMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME} origin={}", Quoted(self.origin.as_str()))?;
        if let Some(destination) = &self.destination {
            write!(f, ",destination={}", Quoted(destination.as_str()))?;
        }
        write!(
            f,
            ",key={},sig={}",
            Quoted(self.key.as_str()),
            Quoted(&self.sig.to_base64())
        )
    }
}

/// A quoted-string. Valid server names, key IDs and base64 never need escapes; escaping anyway
/// keeps the output parseable whatever the types come to allow.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

/// The parts of a federation request that its X-Matrix signature covers ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)).
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The HTTP method, upper case (`GET`).
    pub method: &'a str,
    /// The raw request target, `/_matrix/...` plus `?query` if any, exactly as sent: no
    /// decoding, normalising or reordering, or signatures stop matching.
    pub uri: &'a str,
    /// The sending server's name (never a delegated host).
    pub origin: &'a ServerName,
    /// The receiving server's name (never a delegated host).
    pub destination: &'a ServerName,
    /// The parsed JSON body. `None` when there is no body: `Some({})` signs differently, a known
    /// interoperability bug.
    pub content: Option<&'a Value>,
}

impl RequestParts<'_> {
    /// The JSON object that is signed.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("method".to_owned(), Value::from(self.method));
        map.insert("uri".to_owned(), Value::from(self.uri));
        map.insert("origin".to_owned(), Value::from(self.origin.as_str()));
        map.insert(
            "destination".to_owned(),
            Value::from(self.destination.as_str()),
        );
        if let Some(content) = self.content {
            map.insert("content".to_owned(), content.clone());
        }
        Value::Object(map)
    }

    /// The canonical JSON bytes that are signed.
    pub fn signing_bytes(&self) -> Result<String> {
        signing_bytes(&self.to_json())
    }
}

/// Signs an outgoing request; `to_string()` of the result is the `Authorization` header value.
pub fn sign_request(request: &RequestParts<'_>, key: &SigningKey) -> Result<XMatrix> {
    let sig = key.sign(request.signing_bytes()?.as_bytes());
    Ok(XMatrix {
        origin: request.origin.clone(),
        destination: Some(request.destination.clone()),
        key: key.key_id().clone(),
        sig,
    })
}

/// Checks an incoming request's X-Matrix credential ([spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) steps 3, 4 and 6).
///
/// `our_name` is this server's name (for a multi-tenant server, the tenant the request was routed
/// to). `origin_key` must be the key `auth.origin` publishes under `auth.key`, already checked to
/// be current (see `ServerKeys::verify_key_at`). Errors: `WrongDestination` when the header names
/// another server (spec: 401), `BadSignature` when the signature does not verify.
pub fn verify_request(
    auth: &XMatrix,
    our_name: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    origin_key: &VerifyKey,
) -> Result<()> {
    if auth.destination.as_ref().is_some_and(|d| d != our_name) {
        return Err(Error::WrongDestination);
    }
    let request = RequestParts {
        method,
        uri,
        origin: &auth.origin,
        destination: our_name,
        content,
    };
    origin_key.verify(request.signing_bytes()?.as_bytes(), &auth.sig)
}

#[cfg(test)]
mod tests;
