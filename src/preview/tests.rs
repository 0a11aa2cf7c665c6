use std::time::{Duration, Instant};

use serde_json::json;
use url::Url;

use super::{
    cache_key,
    guard::{Guard, Refused},
    html, image_fields,
    limit::RateLimiter,
    oembed,
};
use crate::config::{PreviewConfig, UrlPattern};

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

/// OpenGraph tags win; relative images resolve against the page; `og:image*` never leaks
/// through unstored.
#[test]
fn opengraph_tags_are_extracted() {
    let page = html::extract(
        r#"<html><head><title>Fallback</title>
        <meta property="og:title" content=" The  Title ">
        <meta property="og:description" content="Desc">
        <meta property="og:image" content="/img/a.png">
        <meta property="og:image:width" content="999">
        <meta property="og:type" content="article">
        </head><body><img src="big.jpg" width="900" height="900"></body></html>"#,
        &url("https://example.org/post/1"),
    );
    assert_eq!(page.og["og:title"], "The Title");
    assert_eq!(page.og["og:description"], "Desc");
    assert_eq!(page.og["og:type"], "article");
    assert!(page.og.get("og:image:width").is_none());
    assert_eq!(page.image, Some(url("https://example.org/img/a.png")));
    assert_eq!(page.oembed, None);
}

/// Without OpenGraph: `<title>`, the meta description and the largest declared image.
#[test]
fn fallbacks_apply() {
    let page = html::extract(
        r#"<html><head><title>Just a title</title><meta name="description" content="About it">
        <link rel="alternate" type="application/json+oembed" href="/oembed?u=1">
        </head><body><img src="data:image/png;base64,AA"><img src="small.png" width="10" height="10">
        <img src="large.png" width="100" height="80"><p>short</p></body></html>"#,
        &url("http://example.org/dir/page"),
    );
    assert_eq!(page.og["og:title"], "Just a title");
    assert_eq!(page.og["og:description"], "About it");
    assert_eq!(page.image, Some(url("http://example.org/dir/large.png")));
    assert_eq!(page.oembed, Some(url("http://example.org/oembed?u=1")));
}

/// Images with non-HTTP schemes are never fetched.
#[test]
fn non_http_images_are_ignored() {
    let page = html::extract(
        r#"<meta property="og:image" content="file:///etc/passwd"><img src="javascript:x">"#,
        &url("https://example.org/"),
    );
    assert_eq!(page.image, None);
}

/// The charset comes from the BOM, the header, a meta tag, or UTF-8/windows-1252 by guess.
#[test]
fn charset_detection() {
    let cp1251 =
        b"<html><head><meta charset=\"windows-1251\"><title>\xcf\xf0\xe8\xe2\xe5\xf2</title>";
    assert!(html::decode(cp1251, Some("text/html")).contains("Привет"));
    let latin1 = b"<title>caf\xe9</title>";
    assert!(html::decode(latin1, Some("text/html; charset=ISO-8859-1")).contains("café"));
    assert!(html::decode(latin1, None).contains("café"), "guessed");
    assert!(html::decode("<title>ü</title>".as_bytes(), None).contains('ü'));
    let http_equiv =
        b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\"><title>\xf0\xd2\xc9</title>";
    assert!(html::decode(http_equiv, None).contains("При"));
}

/// A hostile page (deep nesting, endless tags) is read in time linear in its size; tags inside
/// scripts are not tags.
#[test]
fn hostile_html_is_bounded() {
    let mut page =
        String::from("<script>var s = '<meta property=\"og:title\" content=\"fake\">';</script>");
    page.push_str(&"<div>".repeat(400_000));
    page.push_str(&"<meta property=\"og:x\" content=\"y\">".repeat(10_000));
    page.push_str("<title>Real</title>");
    let started = Instant::now();
    let parsed = html::extract(&page, &url("https://example.org/"));
    assert!(parsed.og.len() <= 64);
    assert_eq!(parsed.og["og:title"], "Real");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

fn guard(tweak: impl FnOnce(&mut PreviewConfig)) -> Guard {
    let mut config = PreviewConfig::default();
    tweak(&mut config);
    Guard::new(&config).unwrap()
}

/// Every spelling of an internal address is refused before any connection; public ones pass.
#[test]
fn internal_addresses_are_refused_in_every_spelling() {
    let guard = guard(|_| {});
    for denied in [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1:8080/",
        "http://0.0.0.0/",
        "http://[fd00::1]/",
        "ftp://example.org/",
        "file:///etc/passwd",
        "http://user:pw@example.org/",
    ] {
        assert_eq!(
            guard.check_url(&url(denied)),
            Err(Refused::Denied),
            "{denied}"
        );
    }
    for allowed in [
        "https://example.org/a",
        "http://93.184.216.34/",
        "http://[2606:4700::1111]/",
    ] {
        assert_eq!(guard.check_url(&url(allowed)), Ok(()), "{allowed}");
    }
}

/// The allowlist lets one address through the denylist; nothing else.
#[test]
fn allowlist_is_narrow() {
    let guard = guard(|c| c.ip_range_allowlist = vec!["127.0.0.1/32".parse().unwrap()]);
    assert_eq!(guard.check_url(&url("http://127.0.0.1:9/")), Ok(()));
    assert_eq!(
        guard.check_url(&url("http://127.0.0.2/")),
        Err(Refused::Denied)
    );
}

/// URL patterns match a domain and its subdomains, or a scheme.
#[test]
fn url_denylist_patterns() {
    let guard = guard(|c| {
        c.url_denylist = ["evil.example", "http:"]
            .into_iter()
            .filter_map(UrlPattern::parse)
            .collect()
    });
    for denied in [
        "https://evil.example/",
        "https://a.b.evil.example/x",
        "https://EVIL.example./",
        "http://fine.example/",
    ] {
        assert_eq!(
            guard.check_url(&url(denied)),
            Err(Refused::Denied),
            "{denied}"
        );
    }
    assert_eq!(guard.check_url(&url("https://notevil.example/")), Ok(()));
    assert_eq!(UrlPattern::parse("bad pattern/x"), None);
    assert_eq!(
        UrlPattern::parse("*.Example.org"),
        Some(UrlPattern::Domain("example.org".into()))
    );
}

/// Known providers are asked through oEmbed; other URLs are not.
#[test]
fn known_oembed_providers() {
    let yt = oembed::known_endpoint(&url("https://www.youtube.com/watch?v=abc")).unwrap();
    assert_eq!(yt.host_str(), Some("www.youtube.com"));
    assert!(
        yt.as_str()
            .contains("url=https%3A%2F%2Fwww.youtube.com%2Fwatch%3Fv%3Dabc")
    );
    assert!(oembed::known_endpoint(&url("https://x.com/someone/status/123")).is_some());
    assert!(oembed::known_endpoint(&url("https://x.com/someone")).is_none());
    assert!(oembed::known_endpoint(&url("https://youtu.be/")).is_none());
    assert!(oembed::known_endpoint(&url("https://example.org/watch")).is_none());
}

/// oEmbed answers map onto OpenGraph fields the way Synapse maps them.
#[test]
fn oembed_mapping() {
    let body = json!({
        "type": "video", "title": "A video", "provider_name": "Tube",
        "thumbnail_url": "https://i.example/t.jpg", "html": "<iframe></iframe>"
    });
    let embed = oembed::parse(
        body.to_string().as_bytes(),
        &url("https://www.youtube.com/oembed"),
    )
    .unwrap();
    assert_eq!(embed.og["og:title"], "A video");
    assert_eq!(embed.og["og:site_name"], "Tube");
    assert_eq!(embed.og["og:type"], "video.other");
    assert_eq!(embed.image, Some(url("https://i.example/t.jpg")));
    let photo = json!({"type": "photo", "url": "/full.png", "author_name": "Ann"});
    let embed = oembed::parse(photo.to_string().as_bytes(), &url("https://p.example/o")).unwrap();
    assert_eq!(embed.og["og:title"], "Ann");
    assert_eq!(embed.image, Some(url("https://p.example/full.png")));
    assert!(oembed::parse(b"[1]", &url("https://p.example/")).is_none());
    assert_eq!(
        html::fragment_text(
            "<blockquote><p>Hello <b>world</b></p><script>x()</script></blockquote>"
        )
        .as_deref(),
        Some("Hello world")
    );
}

/// The cache key is the URL and the hour of `ts`; future times count as now.
#[test]
fn cache_key_buckets_by_hour() {
    let u = url("https://example.org/");
    let hour = 3_600_000;
    let now = 10 * hour + 5;
    assert_eq!(
        cache_key(&u, Some(i64::try_from(9 * hour + 1).unwrap()), now),
        cache_key(&u, Some(i64::try_from(9 * hour + 3_599_999).unwrap()), now)
    );
    assert_ne!(
        cache_key(&u, Some(i64::try_from(9 * hour).unwrap()), now),
        cache_key(&u, None, now)
    );
    assert_eq!(cache_key(&u, Some(i64::MAX), now), cache_key(&u, None, now));
    assert_eq!(cache_key(&u, Some(-1), now), cache_key(&u, None, now));
}

/// A burst passes, the next request waits about one refill, and the wait is reported.
#[test]
fn rate_limit_bucket() {
    let limiter = RateLimiter::new(60, 2);
    let t0 = Instant::now();
    assert!(limiter.check("@a:x", t0).is_ok());
    assert!(limiter.check("@a:x", t0).is_ok());
    let wait = limiter.check("@a:x", t0).unwrap_err();
    assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
    assert!(limiter.check("@b:x", t0).is_ok(), "per user");
    assert!(limiter.check("@a:x", t0 + Duration::from_secs(1)).is_ok());
    assert!(RateLimiter::new(0, 1).check("@a:x", t0).is_ok(), "0 = off");
}

/// A page's own image fields are replaced by the stored copy's, or dropped without one.
#[test]
fn image_fields_replace_page_fields() {
    let mut og = serde_json::Map::new();
    og.insert("og:image".into(), json!("https://x/a.png"));
    og.insert("og:image:alt".into(), json!("alt"));
    og.insert("og:title".into(), json!("t"));
    let og = image_fields(og, None);
    assert_eq!(
        og,
        json!({"og:image:alt": "alt", "og:title": "t"})
            .as_object()
            .unwrap()
            .clone()
    );
}
