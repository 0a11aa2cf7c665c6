//! Direct URLs to the bucket's objects (`[store.s3] redirect`): presigned GETs with the
//! headers mxmedia would answer with signed into them (S3's `response-content-type`,
//! `response-content-disposition` and `response-cache-control`, so the bucket answers as we
//! would), or plain URLs under `public_base_url`, which carry none and so are offered only for
//! answers that need none. Signing is local (HMAC over the request, no network request), but
//! object_store's signer is async: it runs on the S3 runtime like every other call.

use std::{io, time::Duration};

use object_store::{
    Attribute, Attributes,
    signer::{Method, SignedUrlOptions, Signer as _},
};

use super::{S3Blobs, backend_error};
use crate::{
    config::{
        S3Config,
        redirect::{Redirect, public_url},
    },
    store::direct::{DirectAnswer, DirectUrl},
};

/// The headers an object is stored with, so that whoever fetches it without ours (a public
/// bucket, a CDN) gets bytes a browser never renders: without a type it would sniff one, and
/// could find HTML in bytes uploaded as an image. One object holds the bytes of every media
/// with the same hash, whatever type each declared, so it can carry no media's own type.
pub(super) fn object_attributes() -> Attributes {
    Attributes::from_iter([(Attribute::ContentType, "application/octet-stream")])
}

/// How this bucket's objects may be fetched without mxmedia, from `[store.s3]`.
#[derive(Debug, Clone)]
pub(super) enum Direct {
    Presigned { ttl: Duration },
    Public { base: String, keep_for: Duration },
}

impl Direct {
    pub(super) fn from_config(config: &S3Config) -> Option<Self> {
        let ttl = Duration::from_secs(config.presign_ttl_secs);
        match (config.redirect, &config.public_base_url) {
            (Redirect::Off, _) => None,
            (Redirect::Presigned, _) => Some(Self::Presigned { ttl }),
            (Redirect::Public, Some(base)) => Some(Self::Public {
                base: base.clone(),
                // A public URL does not expire, but where a blob lives can change (a move back
                // to files): a redirect is not kept longer than a presigned one would be.
                keep_for: ttl,
            }),
            // Refused by the config check; without a base there is nothing to redirect to.
            (Redirect::Public, None) => None,
        }
    }
}

impl S3Blobs {
    /// A direct URL for blob `sha256` answering with `answer`, or `None` to stream it.
    pub(super) fn direct(
        &self,
        direct: &Direct,
        sha256: &str,
        answer: &DirectAnswer,
    ) -> io::Result<Option<DirectUrl>> {
        let key = self.key(sha256);
        match direct {
            Direct::Public { base, keep_for } => Ok(answer.plain_ok.then(|| DirectUrl {
                url: public_url(base, key.as_ref()),
                keep_for: *keep_for,
            })),
            Direct::Presigned { ttl } => {
                let options = SignedUrlOptions::default().with_query([
                    ("response-content-type", answer.content_type.clone()),
                    (
                        "response-content-disposition",
                        answer.content_disposition.clone(),
                    ),
                    ("response-cache-control", answer.cache_control.clone()),
                ]);
                let store = self.client();
                let ttl = *ttl;
                let url = self
                    .run(async move {
                        store
                            .signed_url_opts(Method::GET, &key, ttl, &options)
                            .await
                    })?
                    .map_err(|e| backend_error("presign", &e.to_string()))?;
                Ok(Some(DirectUrl {
                    url: url.into(),
                    // Half the lifetime: a client replaying a cached redirect still arrives
                    // while the URL works.
                    keep_for: ttl / 2,
                }))
            }
        }
    }
}
