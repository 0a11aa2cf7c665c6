//! Identifiers that arrive in URLs, headers and JSON: server names, media IDs and `mxc://` URIs.
//! Each is a newtype that can only hold a valid value ("parse, don't validate"), so code past the
//! HTTP edge never re-checks them and never passes unchecked text to storage or to an outbound URL
//! ([spec: mxc URIs](https://spec.matrix.org/v1.16/client-server-api/#matrix-content-mxc-uris) demands whitelisting against path traversal).

mod media_id;
mod mxc;
mod server_name;

pub use media_id::MediaId;
pub use mxc::MxcUri;
pub use server_name::{HostKind, ServerName};

/// Gives a string newtype `Display`, `AsRef<str>`, `Borrow<str>` and serde through its string form;
/// the type must have `fn as_str(&self) -> &str` and `impl FromStr<Err = Error>`.
macro_rules! string_newtype {
    ($ty:ty) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_newtype;

#[cfg(test)]
mod tests;
