// figment's Jail API returns its large error type by value.
#![allow(clippy::result_large_err)]
#![allow(
    clippy::indexing_slicing,
    reason = "a test indexes what it just asserted the shape of; a panic is a test failure"
)]

use bytesize::ByteSize;
use figment::Jail;

use super::{Config, FreeSpace, StrayEnv, UrlPattern};

/// With nothing set, the documented defaults apply.
#[test]
fn defaults() {
    Jail::expect_with(|_jail| {
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(config.server_name, "localhost");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8090");
        assert_eq!(config.media.max_upload_size, ByteSize::mib(50));
        assert_eq!(config.auth.token_cache_secs, 60);
        Ok(())
    });
}

/// The environment overrides the file, the file overrides the defaults, `__` nests.
#[test]
fn layering_and_nesting() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "mx.toml",
            r#"
                server_name = "file.example"
                [media]
                max_upload_size = "10MiB"
                [auth]
                token_cache_secs = 30
            "#,
        )?;
        jail.set_env("MXMEDIA_CONFIG", "mx.toml");
        jail.set_env("MXMEDIA_SERVER_NAME", "env.example:8448");
        jail.set_env("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE", "100MiB");
        jail.set_env(
            "MXMEDIA_AUTH__STATIC_TOKENS",
            r#"{tok1="@alice:env.example"}"#,
        );
        jail.set_env("MXMEDIA_STORE__MIN_FREE_SPACE", "5%");
        jail.set_env("MXMEDIA_LOG", "debug");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(config.server_name, "env.example:8448");
        assert_eq!(config.media.max_upload_size, ByteSize::mib(100));
        assert_eq!(config.auth.token_cache_secs, 30);
        assert_eq!(
            config.auth.static_tokens.get("tok1").map(String::as_str),
            Some("@alice:env.example")
        );
        assert_eq!(config.store.min_free_space, FreeSpace::Percent(5.0));
        Ok(())
    });
}

/// Sizes are accepted as plain byte counts too.
#[test]
fn size_as_integer() {
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE", "1048576");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(config.media.max_upload_size, ByteSize::mib(1));
        Ok(())
    });
}

/// A bad value names the variable in the error.
#[test]
fn bad_values_name_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE", "lots");
        let err = Config::load(None)
            .err()
            .ok_or("accepted a bad size")?
            .to_string();
        assert!(
            err.contains("MAX_UPLOAD_SIZE") || err.contains("max_upload_size"),
            "{err}"
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_SERVER_NAME", "bad name/with path");
        let err = Config::load(None)
            .err()
            .ok_or("accepted a bad server name")?
            .to_string();
        assert!(err.contains("MXMEDIA_SERVER_NAME"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_LISTEN", "not-an-address");
        let err = Config::load(None)
            .err()
            .ok_or("accepted a bad listen address")?
            .to_string();
        assert!(err.to_lowercase().contains("listen"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_MEDIA__NO_SUCH_KEY", "1");
        assert!(
            Config::load(None).is_err(),
            "unknown keys are typos and must be refused"
        );
        Ok(())
    });
}

/// `check-config` output never shows a static token.
#[test]
fn masked_output_hides_tokens() {
    let mut config = Config::default();
    config
        .auth
        .static_tokens
        .insert("s3cr3t-token".into(), "@bot:localhost".into());
    let shown = config.masked_json();
    assert!(!shown.contains("s3cr3t-token"));
    assert!(shown.contains("@bot:localhost"));
}

#[test]
fn free_space_percent() {
    assert_eq!(FreeSpace::Percent(5.0).bytes(1000), 50);
    assert_eq!(FreeSpace::Bytes(7).bytes(1000), 7);
}

/// Notaries are given by name or with pinned keys; a bad key id names its variable.
#[test]
fn federation_keys() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "MXMEDIA_FEDERATION__TRUSTED_KEY_SERVERS",
            r#"["matrix.org", {server_name="notary.example:8448", verify_keys={"ed25519:auto"="Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}}]"#,
        );
        jail.set_env("MXMEDIA_FEDERATION__SIGNING_KEY_ID", "ed25519:a_AbCd");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        let notaries = &config.federation.trusted_key_servers;
        assert_eq!(notaries.len(), 2);
        assert_eq!(notaries[0].server_name, "matrix.org");
        assert!(notaries[0].verify_keys.is_empty());
        assert_eq!(notaries[1].server_name, "notary.example:8448");
        assert_eq!(notaries[1].verify_keys.len(), 1);

        jail.set_env("MXMEDIA_FEDERATION__SIGNING_KEY_ID", "a_AbCd");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("MXMEDIA_FEDERATION__SIGNING_KEY_ID"), "{err}");

        jail.set_env("MXMEDIA_FEDERATION__SIGNING_KEY_ID", "ed25519:a_AbCd");
        jail.set_env(
            "MXMEDIA_FEDERATION__TRUSTED_KEY_SERVERS",
            r#"[{server_name="notary.example", verify_keys={"ed25519:auto"="not base64!"}}]"#,
        );
        let err = Config::load(None).unwrap_err().to_string();
        assert!(
            err.contains("MXMEDIA_FEDERATION__TRUSTED_KEY_SERVERS"),
            "{err}"
        );
        Ok(())
    });
}

/// TLS is off by default and on with both paths, from the file or the environment.
#[test]
fn tls_paths() {
    Jail::expect_with(|jail| {
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert!(config.tls.paths().is_none());
        jail.create_file(
            "mx.toml",
            r#"
                [tls]
                cert = "/etc/mxmedia/fullchain.pem"
            "#,
        )?;
        jail.set_env("MXMEDIA_CONFIG", "mx.toml");
        jail.set_env("MXMEDIA_TLS__KEY", "/etc/mxmedia/privkey.pem");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        let (cert, key) = config.tls.paths().ok_or("tls not on")?;
        assert_eq!(cert.to_str(), Some("/etc/mxmedia/fullchain.pem"));
        assert_eq!(key.to_str(), Some("/etc/mxmedia/privkey.pem"));
        Ok(())
    });
}

/// A certificate without a key (or the reverse) is refused, naming both variables.
#[test]
fn tls_needs_both_paths() {
    for var in ["MXMEDIA_TLS__CERT", "MXMEDIA_TLS__KEY"] {
        Jail::expect_with(|jail| {
            jail.set_env(var, "/etc/mxmedia/some.pem");
            let err = Config::load(None)
                .err()
                .ok_or("accepted half a TLS config")?
                .to_string();
            assert!(
                err.contains("MXMEDIA_TLS__CERT") && err.contains("MXMEDIA_TLS__KEY"),
                "{err}"
            );
            Ok(())
        });
    }
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_TLS__CHAIN", "/etc/mxmedia/some.pem");
        assert!(Config::load(None).is_err(), "unknown tls keys are refused");
        Ok(())
    });
}

/// Previews are off by default, with the federation's address denylist; env vars nest.
#[test]
fn preview_section() {
    Jail::expect_with(|jail| {
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert!(!config.preview.enabled);
        assert_eq!(
            config.preview.ip_range_denylist,
            config.federation.ip_range_denylist
        );
        jail.set_env("MXMEDIA_PREVIEW__ENABLED", "true");
        jail.set_env(
            "MXMEDIA_PREVIEW__URL_DENYLIST",
            r#"["example.com","http:"]"#,
        );
        jail.set_env("MXMEDIA_PREVIEW__IP_RANGE_ALLOWLIST", r#"["10.1.2.3/32"]"#);
        jail.set_env("MXMEDIA_PREVIEW__MAX_PAGE_SIZE", "64KiB");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert!(config.preview.enabled);
        assert_eq!(
            config.preview.url_denylist,
            [
                UrlPattern::Domain("example.com".into()),
                UrlPattern::Scheme("http".into())
            ]
        );
        assert_eq!(config.preview.ip_range_allowlist.len(), 1);
        assert_eq!(config.preview.max_page_size, ByteSize::kib(64));
        Ok(())
    });
}

/// Unsafe or impossible preview settings are refused, naming the variable.
#[test]
fn preview_validation_names_the_variable() {
    for (key, value) in [
        ("MXMEDIA_PREVIEW__IP_RANGE_DENYLIST", "[]"),
        ("MXMEDIA_PREVIEW__URL_DENYLIST", r#"["bad pattern/x"]"#),
        ("MXMEDIA_PREVIEW__MAX_PAGE_SIZE", "0"),
        ("MXMEDIA_PREVIEW__MAX_REDIRECTS", "50"),
        ("MXMEDIA_PREVIEW__TIMEOUT_SECS", "0"),
    ] {
        Jail::expect_with(|jail| {
            jail.set_env("MXMEDIA_PREVIEW__ENABLED", "true");
            jail.set_env(key, value);
            let err = Config::load(None)
                .err()
                .ok_or("accepted a bad preview setting")?
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
            Ok(())
        });
    }
}

/// A variable under the prefix that is clearly no setting (the README once told users to
/// `export MXMEDIA_TOKEN`) does not stop `serve`: it is ignored and reported. `check-config`
/// still refuses it, naming it.
#[test]
fn stray_variables_are_ignored_by_serve_and_refused_by_check_config() {
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_TOKEN", "mxm_abc");
        jail.set_env("MXMEDIA_UPSTREAM", "http://127.0.0.1:8090");
        jail.set_env("MXMEDIA_SERVER_NAME", "example.org");
        let (config, ignored) =
            Config::load_with(None, StrayEnv::Ignore).map_err(|e| e.to_string())?;
        assert_eq!(config.server_name, "example.org");
        let mut ignored = ignored;
        ignored.sort();
        assert_eq!(ignored, ["MXMEDIA_TOKEN", "MXMEDIA_UPSTREAM"]);
        let err = Config::load(None)
            .err()
            .ok_or("check-config accepted MXMEDIA_TOKEN")?
            .to_string();
        assert!(
            err.contains("MXMEDIA_TOKEN") || err.contains("MXMEDIA_UPSTREAM"),
            "{err}"
        );
        Ok(())
    });
}

/// A mistyped setting is refused even by `serve`, naming the variable and the setting it
/// probably meant: a misspelt name, a single `_` for `__`, a forgotten section, a bad key.
#[test]
fn typos_of_settings_are_refused_with_a_suggestion() {
    for (var, meant) in [
        ("MXMEDIA_SERVERNAME", Some("MXMEDIA_SERVER_NAME")),
        ("MXMEDIA_DATADIR", Some("MXMEDIA_DATA_DIR")),
        (
            "MXMEDIA_MEDIA_MAX_UPLOAD_SIZE",
            Some("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE"),
        ),
        (
            "MXMEDIA_MAX_UPLOAD_SIZE",
            Some("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE"),
        ),
        (
            "MXMEDIA_STORE__MIN_FREE_SPAC",
            Some("MXMEDIA_STORE__MIN_FREE_SPACE"),
        ),
        ("MXMEDIA_MEDIA__NO_SUCH_KEY", None),
        ("MXMEDIA_TLS_CERTIFICATE", None),
    ] {
        Jail::expect_with(|jail| {
            jail.set_env(var, "1");
            let err = Config::load_with(None, StrayEnv::Ignore)
                .err()
                .ok_or(format!("accepted {var}"))?
                .to_string();
            assert!(err.contains(var), "{err}");
            if let Some(meant) = meant {
                assert!(err.contains(&format!("did you mean {meant}?")), "{err}");
            }
            Ok(())
        });
    }
}

/// Real settings of every shape still load through the check: plain, sectioned, a whole
/// section as a table, and a map entry.
#[test]
fn settings_pass_the_stray_check() {
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_WORKERS", "3");
        jail.set_env("MXMEDIA_LOG", "debug");
        jail.set_env("MXMEDIA_TLS", "{}");
        jail.set_env("MXMEDIA_AUTH__STATIC_TOKENS__TOK", "@bot:localhost");
        let (config, ignored) =
            Config::load_with(None, StrayEnv::Refuse).map_err(|e| e.to_string())?;
        assert!(ignored.is_empty());
        assert_eq!(config.workers, 3);
        assert_eq!(config.auth.static_tokens["tok"], "@bot:localhost");
        Ok(())
    });
}

/// Thumbnail sizes name their method as the query parameter does (`crop`, `scale`), parsed by
/// `Method` itself; any other name stops the load with the accepted names.
#[test]
fn thumbnail_methods_use_the_query_names() {
    use mxmedia_image::Method;
    Jail::expect_with(|jail| {
        jail.create_file(
            "mx.toml",
            r#"
                [[thumbnails.sizes]]
                width = 64
                height = 64
                method = "crop"
                [[thumbnails.sizes]]
                width = 640
                height = 480
                method = "scale"
            "#,
        )?;
        jail.set_env("MXMEDIA_CONFIG", "mx.toml");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        let methods: Vec<Method> = config.thumbnails.sizes.iter().map(|s| s.method).collect();
        assert_eq!(methods, [Method::Crop, Method::Scale]);
        for method in methods {
            assert_eq!(method.as_str().parse::<Method>(), Ok(method));
        }
        jail.create_file(
            "mx.toml",
            r#"
                [[thumbnails.sizes]]
                width = 64
                height = 64
                method = "zoom"
            "#,
        )?;
        let err = Config::load(None).expect_err("an unknown method is refused");
        assert!(
            err.to_string()
                .contains("unknown variant: found `zoom`, expected ``crop` or `scale``"),
            "{err}"
        );
        Ok(())
    });
}

/// `[store.s3]` comes from `MXMEDIA_STORE__S3__*`: setting the bucket turns it on, the others
/// are typed, the secret never shows in `check-config`, and a bad value names its variable.
#[test]
fn s3_section_from_the_environment() {
    Jail::expect_with(|jail| {
        let config = Config::load(None).map_err(|e| e.to_string())?;
        assert!(config.store.s3.is_none(), "off by default");

        jail.set_env("MXMEDIA_STORE__S3__BUCKET", "media");
        jail.set_env("MXMEDIA_STORE__S3__ENDPOINT", "http://127.0.0.1:3900");
        jail.set_env("MXMEDIA_STORE__S3__REGION", "garage");
        jail.set_env("MXMEDIA_STORE__S3__ACCESS_KEY_ID", "GKabc");
        jail.set_env("MXMEDIA_STORE__S3__SECRET_ACCESS_KEY", "s3cr3t-value");
        jail.set_env("MXMEDIA_STORE__S3__PREFIX", "mx/");
        jail.set_env("MXMEDIA_STORE__S3__PATH_STYLE", "true");
        let (config, _) = Config::load_with(None, StrayEnv::Refuse).map_err(|e| e.to_string())?;
        let s3 = config.store.s3.clone().ok_or("no [store.s3]")?;
        assert_eq!(s3.bucket, "media");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!((s3.region.as_str(), s3.prefix.as_str()), ("garage", "mx/"));
        assert!(s3.path_style);
        assert_eq!((s3.timeout_secs, s3.sweep_grace_secs), (30, 3600));
        assert!(!config.masked_json().contains("s3cr3t-value"));

        for (var, value) in [
            ("MXMEDIA_STORE__S3__PREFIX", "mx"),
            ("MXMEDIA_STORE__S3__PREFIX", "/mx/"),
            ("MXMEDIA_STORE__S3__ENDPOINT", "127.0.0.1:3900"),
            ("MXMEDIA_STORE__S3__SECRET_ACCESS_KEY_FILE", "/etc/secret"),
        ] {
            jail.set_env(var, value);
            let err = Config::load(None).err().ok_or("accepted")?.to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
            jail.set_env("MXMEDIA_STORE__S3__PREFIX", "mx/");
            jail.set_env("MXMEDIA_STORE__S3__ENDPOINT", "http://127.0.0.1:3900");
        }
        Ok(())
    });
}

/// With blobs in S3, an upload size limit above 5 GiB (S3's server-side copy limit, which
/// uploads reach their final key by) is refused, naming both variables; 5 GiB is accepted.
#[test]
fn s3_refuses_uploads_larger_than_a_copy() {
    Jail::expect_with(|jail| {
        jail.set_env("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE", "6GiB");
        Config::load(None).map_err(|e| e.to_string())?;
        jail.set_env("MXMEDIA_STORE__S3__BUCKET", "media");
        let err = Config::load(None).err().ok_or("accepted 6GiB")?.to_string();
        assert!(
            err.contains("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE")
                && err.contains("MXMEDIA_STORE__S3__BUCKET"),
            "{err}"
        );
        jail.set_env("MXMEDIA_MEDIA__MAX_UPLOAD_SIZE", "5GiB");
        Config::load(None).map_err(|e| e.to_string())?;
        Ok(())
    });
}
