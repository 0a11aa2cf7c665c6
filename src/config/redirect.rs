//! The redirect keys of `[store.s3]` (`redirect`, `public_base_url`, `presign_ttl_secs`): whether
//! downloads of blobs kept in the bucket may be answered with a `307` to it, and how. Their
//! defaults and the checks between them live here, apart from the connection keys.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `presign_ttl_secs` by default: five minutes, long enough for a slow client to follow the
/// redirect, short enough that a quarantine reaches redirected downloads soon.
pub const DEFAULT_PRESIGN_TTL_SECS: u64 = 300;
/// Bounds of `presign_ttl_secs`. A redirect is cached for half the TTL, so 10 s still leaves a
/// few seconds; a day bounds how long a URL handed out stays usable after a quarantine (S3
/// itself allows a week).
pub const PRESIGN_TTL_SECS_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;

/// How downloads of blobs in the bucket may be redirected, when the client allows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redirect {
    /// mxmedia streams every download itself.
    #[default]
    Off,
    /// A presigned GET of the object, valid `presign_ttl_secs`, with the Content-Type and
    /// Content-Disposition mxmedia would send signed into it.
    Presigned,
    /// `public_base_url` + the object's key (a CDN or a public bucket). It cannot carry our
    /// headers, so only media a browser may show inline is redirected; the rest is streamed.
    Public,
}

/// Checks the redirect keys together: `public` needs an absolute http(s) base URL, and the
/// presigned URL's lifetime stays in its bounds.
pub(crate) fn validate(
    redirect: Redirect,
    public_base_url: Option<&str>,
    presign_ttl_secs: u64,
) -> Result<(), ConfigError> {
    if !PRESIGN_TTL_SECS_RANGE.contains(&presign_ttl_secs) {
        return Err(ConfigError::invalid(
            "MXMEDIA_STORE__S3__PRESIGN_TTL_SECS",
            &format!(
                "must be between {} and {} seconds",
                PRESIGN_TTL_SECS_RANGE.start(),
                PRESIGN_TTL_SECS_RANGE.end()
            ),
        ));
    }
    match (redirect, public_base_url) {
        (Redirect::Public, None) => Err(ConfigError::invalid(
            "MXMEDIA_STORE__S3__PUBLIC_BASE_URL",
            "required with MXMEDIA_STORE__S3__REDIRECT=public: the CDN or public bucket URL \
             the objects are served from",
        )),
        (_, Some(base)) if !is_base_url(base) => Err(ConfigError::invalid(
            "MXMEDIA_STORE__S3__PUBLIC_BASE_URL",
            "must be an absolute http:// or https:// URL without a query or fragment",
        )),
        _ => Ok(()),
    }
}

fn is_base_url(base: &str) -> bool {
    url::Url::parse(base).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.query().is_none()
            && url.fragment().is_none()
    })
}

/// The public URL of the object `key` under `base`: one `/` between them, whatever `base` ends
/// with.
pub fn public_url(base: &str, key: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        key.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    // figment's Jail returns its own (large) error type; these are tests.
    #![allow(clippy::result_large_err)]
    use super::*;

    /// `public` without a base URL, a relative or odd base URL, and a TTL out of bounds are
    /// refused, each naming the variable to fix.
    #[test]
    fn bad_redirect_settings_are_refused_by_name() {
        let refused = |r, base: Option<&str>, ttl| match validate(r, base, ttl) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(Redirect::Public, None, 300),
            "MXMEDIA_STORE__S3__PUBLIC_BASE_URL"
        );
        for base in [
            "cdn.example.org",
            "ftp://cdn.example.org",
            "https://cdn/?a=b",
        ] {
            assert_eq!(
                refused(Redirect::Public, Some(base), 300),
                "MXMEDIA_STORE__S3__PUBLIC_BASE_URL"
            );
        }
        for ttl in [0, 9, 86_401] {
            assert_eq!(
                refused(Redirect::Presigned, None, ttl),
                "MXMEDIA_STORE__S3__PRESIGN_TTL_SECS"
            );
        }
        assert!(
            validate(
                Redirect::Public,
                Some("https://cdn.example.org/media/"),
                300
            )
            .is_ok()
        );
        assert!(validate(Redirect::Off, None, DEFAULT_PRESIGN_TTL_SECS).is_ok());
    }

    /// The keys are read from the environment as an admin writes them, and a `public` redirect
    /// without its base URL stops the load with the variable to set.
    #[test]
    fn redirect_keys_load_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MXMEDIA_STORE__S3__BUCKET", "media");
            jail.set_env("MXMEDIA_STORE__S3__REDIRECT", "presigned");
            jail.set_env("MXMEDIA_STORE__S3__PRESIGN_TTL_SECS", "120");
            let config = crate::config::Config::load(None).map_err(|e| e.to_string())?;
            let s3 = config.store.s3.ok_or("no [store.s3]")?;
            assert_eq!(
                (s3.redirect, s3.presign_ttl_secs),
                (Redirect::Presigned, 120)
            );
            assert_eq!(s3.public_base_url, None);

            jail.set_env("MXMEDIA_STORE__S3__REDIRECT", "public");
            let err = crate::config::Config::load(None)
                .err()
                .ok_or("public without a base URL was accepted")?;
            assert!(
                err.to_string()
                    .contains("MXMEDIA_STORE__S3__PUBLIC_BASE_URL"),
                "{err}"
            );
            Ok(())
        });
    }

    /// A public URL has exactly one slash between the base and the key.
    #[test]
    fn public_urls_join_with_one_slash() {
        for base in ["https://cdn.example.org/m", "https://cdn.example.org/m/"] {
            assert_eq!(
                public_url(base, "mx/ab/abcd"),
                "https://cdn.example.org/m/mx/ab/abcd"
            );
        }
    }
}
