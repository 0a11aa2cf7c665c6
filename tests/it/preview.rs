//! URL previews against a real web site on loopback: OpenGraph, fallbacks, charsets, redirects,
//! images, oEmbed, limits, the cache and single flight, and the SSRF guard on every hop.
//!
//! The site lives on 127.0.0.1, which the tests let through with an allowlist of exactly that
//! address; 127.0.0.2 (same loopback, still denied) stands for "an internal address".

use std::{
    collections::HashMap,
    net::{Ipv4Addr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mxmedia::config::{Config, UrlPattern};
use serde_json::json;

use crate::{
    common::{ALICE, BOB, TestServer, assert_error, urlencode},
    fake_dns::FakeDns,
};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");
const PNG: &[u8] = include_bytes!("../fixtures/tiny_64x64.png");

/// The photo with bytes after its end marker: the same picture, other bytes (another blob).
fn other_photo() -> Vec<u8> {
    let mut bytes = PHOTO.to_vec();
    bytes.extend_from_slice(b"trailing bytes that decoders ignore");
    bytes
}

/// A small web site that counts the requests for each path.
struct Site {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Site {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let counted = hits.clone();
        let server = HttpServer::new(move || {
            let counted = counted.clone();
            App::new()
                .app_data(web::Data::new(port))
                .wrap_fn(move |req, srv| {
                    use actix_web::dev::Service as _;
                    *counted
                        .lock()
                        .unwrap()
                        .entry(req.path().to_owned())
                        .or_default() += 1;
                    srv.call(req)
                })
                .default_service(web::to(page))
        })
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { port, hits, handle }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

fn html(body: impl Into<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body.into())
}

fn redirect(to: impl Into<String>) -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("location", to.into()))
        .finish()
}

const OG_PAGE: &str = r#"<!doctype html><html><head><title>Ignored</title>
<meta property="og:title" content="A Blog Post">
<meta property="og:description" content="Something worth reading">
<meta property="og:type" content="article">
<meta property="og:image" content="/photo.jpg">
</head><body><p>Body text</p></body></html>"#;

async fn page(req: HttpRequest, port: web::Data<u16>) -> HttpResponse {
    let denied = format!("http://127.0.0.2:{}", **port);
    match req.path() {
        "/og" | "/og-cached" | "/og-flight" => {
            if req.path() == "/og-flight" {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            html(OG_PAGE)
        }
        "/title" => html(
            "<html><head><title>Only a title</title>\
             <meta name=\"description\" content=\"And a description\"></head></html>",
        ),
        "/cp1251" => {
            let mut body = b"<html><head><meta charset=\"windows-1251\"><title>".to_vec();
            // "Привет, мир" in windows-1251.
            body.extend_from_slice(b"\xcf\xf0\xe8\xe2\xe5\xf2, \xec\xe8\xf0");
            body.extend_from_slice(b"</title></head></html>");
            HttpResponse::Ok().content_type("text/html").body(body)
        }
        "/latin1" => HttpResponse::Ok()
            .content_type("text/html; charset=iso-8859-1")
            .body(b"<title>Caf\xe9 cr\xe8me</title>".to_vec()),
        "/hop3" => redirect("/hop2"),
        "/hop2" => redirect(format!("http://127.0.0.1:{}/hop1", **port)),
        "/hop1" => redirect("/og"),
        "/loop" => redirect("/loop"),
        "/to-denied" => redirect(format!("{denied}/og")),
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        "/photo.jpg" => HttpResponse::Ok()
            .content_type("image/jpeg")
            .body(PHOTO.to_vec()),
        "/og-other" => html(OG_PAGE.replace("/photo.jpg", "/other.jpg")),
        "/other.jpg" => HttpResponse::Ok()
            .content_type("image/jpeg")
            .body(other_photo()),
        "/og-png" => html(OG_PAGE.replace("/photo.jpg", "/tiny.png")),
        "/tiny.png" => HttpResponse::Ok()
            .content_type("image/png")
            .body(PNG.to_vec()),
        "/big" => {
            let mut body = String::from(
                "<html><head><meta property=\"og:title\" content=\"Big page\"></head><body>",
            );
            body.push_str(&"<p>padding padding padding</p>".repeat(100_000));
            html(body)
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            html(OG_PAGE)
        }
        "/denied-image" => html(format!(
            "<html><head><meta property=\"og:title\" content=\"Has a bad image\">\
             <meta property=\"og:image\" content=\"{denied}/photo.jpg\"></head></html>"
        )),
        "/embed" => html(
            "<html><head><title>Page title</title>\
             <link rel=\"alternate\" type=\"application/json+oembed\" href=\"/oembed.json\">\
             </head></html>",
        ),
        "/oembed.json" => HttpResponse::Ok().content_type("application/json").body(
            r#"{"version":"1.0","type":"rich","title":"Embedded title","provider_name":"Site",
               "html":"<blockquote><p>Quoted text</p></blockquote>","thumbnail_url":"/photo.jpg"}"#,
        ),
        "/pdf" => HttpResponse::Ok()
            .content_type("application/pdf")
            .body("%PDF-1.4"),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// Previews on, with the loopback site (127.0.0.1 only) let through.
fn enable(config: &mut Config) {
    config.preview.enabled = true;
    config.preview.ip_range_allowlist = vec!["127.0.0.1/32".parse().unwrap()];
    config.preview.rate_limit_burst = 1000;
}

fn preview_url(server: &TestServer, url: &str) -> String {
    server.url(&format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        urlencode(url)
    ))
}

async fn preview(server: &TestServer, url: &str) -> serde_json::Value {
    let mut res = server.get_as(preview_url(server, url), ALICE).await;
    assert_eq!(res.status(), 200, "{url}");
    res.json().await.unwrap()
}

async fn download(server: &TestServer, mxc: &str) -> Vec<u8> {
    let id = mxc.strip_prefix("mxc://localhost/").unwrap();
    let mut res = server.get_as(server.download_url(id), ALICE).await;
    assert_eq!(res.status(), 200);
    res.body().limit(10 << 20).await.unwrap().to_vec()
}

/// OpenGraph fields come back as found; the image is a stored copy with its size and type.
#[actix_web::test]
async fn opengraph_page_with_image() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let og = preview(&server, &site.url("/og")).await;
    assert_eq!(og["og:title"], "A Blog Post");
    assert_eq!(og["og:description"], "Something worth reading");
    assert_eq!(og["og:type"], "article");
    assert_eq!(og["og:image:type"], "image/jpeg");
    assert_eq!(og["og:image:width"], 640);
    assert_eq!(og["og:image:height"], 480);
    assert_eq!(og["matrix:image:size"], PHOTO.len());
    let image = og["og:image"].as_str().unwrap();
    assert_eq!(download(&server, image).await, PHOTO);
}

/// Without OpenGraph, the title and meta description stand in.
#[actix_web::test]
async fn title_only_page() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let og = preview(&server, &site.url("/title")).await;
    assert_eq!(
        og,
        serde_json::json!({"og:title": "Only a title", "og:description": "And a description"})
    );
}

/// Legacy charsets, declared in a meta tag or the header, are decoded.
#[actix_web::test]
async fn non_utf8_pages() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    assert_eq!(
        preview(&server, &site.url("/cp1251")).await["og:title"],
        "Привет, мир"
    );
    assert_eq!(
        preview(&server, &site.url("/latin1")).await["og:title"],
        "Café crème"
    );
}

/// Redirect chains are followed (relative and absolute), up to the limit.
#[actix_web::test]
async fn redirects_are_followed_up_to_a_limit() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    assert_eq!(
        preview(&server, &site.url("/hop3")).await["og:title"],
        "A Blog Post"
    );
    let mut res = server
        .get_as(preview_url(&server, &site.url("/loop")), ALICE)
        .await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
    assert_eq!(
        site.hits("/loop"),
        6,
        "first request and max_redirects (5) more"
    );
}

/// A redirect to a denied address is refused like the address itself, before connecting.
#[actix_web::test]
async fn redirect_to_denied_address_is_forbidden() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    for path in ["/to-denied", "/to-metadata"] {
        let mut res = server
            .get_as(preview_url(&server, &site.url(path)), ALICE)
            .await;
        assert_error(&mut res, 403, "M_FORBIDDEN").await;
    }
}

/// A direct image URL previews as that image.
#[actix_web::test]
async fn direct_image_url() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let og = preview(&server, &site.url("/photo.jpg")).await;
    assert_eq!(og["og:image:width"], 640);
    assert_eq!(og["matrix:image:size"], PHOTO.len());
    assert_eq!(
        download(&server, og["og:image"].as_str().unwrap()).await,
        PHOTO
    );
}

/// Other content types give an empty preview; images over the size limit are left out.
#[actix_web::test]
async fn unsupported_and_oversized_content() {
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.max_image_size = bytesize::ByteSize::kib(1);
    })
    .await;
    assert_eq!(
        preview(&server, &site.url("/pdf")).await,
        serde_json::json!({})
    );
    assert_eq!(
        preview(&server, &site.url("/photo.jpg")).await,
        serde_json::json!({})
    );
    let og = preview(&server, &site.url("/og")).await;
    assert_eq!(og["og:title"], "A Blog Post");
    assert!(og.get("og:image").is_none(), "{og}");
}

/// Only `max_page_size` bytes of a page are read; its head still gives the preview.
#[actix_web::test]
async fn oversized_page_is_cut() {
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.max_page_size = bytesize::ByteSize::kib(16);
    })
    .await;
    let og = preview(&server, &site.url("/big")).await;
    assert_eq!(og["og:title"], "Big page");
    let description = og["og:description"].as_str().unwrap();
    assert!(description.starts_with("padding"), "{description}");
}

/// A page that does not answer in time fails the preview after the timeout, not later.
#[actix_web::test]
async fn slow_page_times_out() {
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.timeout_secs = 1;
    })
    .await;
    let started = Instant::now();
    let mut res = server
        .get_as(preview_url(&server, &site.url("/slow")), ALICE)
        .await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// An `og:image` on a denied address is left out; the rest of the preview stands.
#[actix_web::test]
async fn denied_image_is_left_out() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let og = preview(&server, &site.url("/denied-image")).await;
    assert_eq!(og, serde_json::json!({"og:title": "Has a bad image"}));
    assert_eq!(site.hits("/photo.jpg"), 0);
}

/// A page advertising oEmbed gets the provider's fields, and its thumbnail as the image.
#[actix_web::test]
async fn oembed_advertised_by_page() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let og = preview(&server, &site.url("/embed")).await;
    assert_eq!(og["og:title"], "Embedded title");
    assert_eq!(og["og:site_name"], "Site");
    assert_eq!(og["og:description"], "Quoted text");
    assert!(
        og["og:image"]
            .as_str()
            .unwrap()
            .starts_with("mxc://localhost/")
    );
}

/// A second request for the same URL (and hour) is answered from the cache.
#[actix_web::test]
async fn second_request_is_cached() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let started = Instant::now();
    let first = preview(&server, &site.url("/og-cached")).await;
    let uncached = started.elapsed();
    let started = Instant::now();
    let second = preview(&server, &site.url("/og-cached")).await;
    let cached = started.elapsed();
    eprintln!("preview latency: uncached {uncached:?}, cached {cached:?}");
    assert_eq!(first, second);
    assert_eq!(site.hits("/og-cached"), 1);
    assert_eq!(site.hits("/photo.jpg"), 1);
    // Another hour of `ts` is another cache entry.
    let old = format!("{}&ts=1000", preview_url(&server, &site.url("/og-cached")));
    assert_eq!(server.get_as(old, ALICE).await.status(), 200);
    assert_eq!(site.hits("/og-cached"), 2);
}

/// Twenty concurrent requests for one URL cause one fetch, and all get the same answer.
#[actix_web::test]
async fn concurrent_requests_share_one_fetch() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let url = preview_url(&server, &site.url("/og-flight"));
    let requests = (0..20).map(|i| {
        let url = url.clone();
        let server = &server;
        async move {
            let mut res = server
                .get_as(url, if i % 2 == 0 { ALICE } else { BOB })
                .await;
            assert_eq!(res.status(), 200);
            res.json::<serde_json::Value>().await.unwrap()
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(answers[0]["og:title"], "A Blog Post");
    assert_eq!(site.hits("/og-flight"), 1);
    assert_eq!(site.hits("/photo.jpg"), 1);
}

/// With the default address policy, every way of naming an internal address is refused with
/// 403, and the error says nothing about the host.
#[actix_web::test]
async fn internal_addresses_are_forbidden_by_default() {
    let site = Site::start();
    let dns = FakeDns::start().await;
    dns.a("internal.test", Ipv4Addr::LOCALHOST);
    dns.a("metadata.test", Ipv4Addr::new(169, 254, 169, 254));
    dns.a("localhost", Ipv4Addr::LOCALHOST);
    let server = TestServer::start_with(|c| {
        c.preview.enabled = true;
        c.preview.nameservers = vec![dns.addr];
        c.preview.rate_limit_burst = 1000;
    })
    .await;
    let port = site.port;
    for url in [
        format!("http://127.0.0.1:{port}/og"),
        format!("http://[::1]:{port}/og"),
        format!("http://[::ffff:127.0.0.1]:{port}/og"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://2130706433:{port}/og"),
        format!("http://0x7f000001:{port}/og"),
        format!("http://127.1:{port}/og"),
        format!("http://internal.test:{port}/og"),
        "http://metadata.test/latest/meta-data/".to_owned(),
        format!("http://localhost:{port}/og"),
        "file:///etc/passwd".to_owned(),
    ] {
        let mut res = server.get_as(preview_url(&server, &url), ALICE).await;
        assert_eq!(res.status(), 403, "{url}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["errcode"], "M_FORBIDDEN", "{url}");
        let text = body["error"].as_str().unwrap();
        assert!(
            !text.contains("127") && !text.contains("internal") && !text.contains("169"),
            "{text}"
        );
    }
    assert_eq!(site.hits("/og"), 0, "nothing reached the site");
}

/// A name with one allowed and one denied address is refused as a whole, whichever comes
/// first: connecting to the allowed one would leave the choice to whoever runs the name's DNS.
#[actix_web::test]
async fn name_with_any_denied_address_is_forbidden() {
    let site = Site::start();
    let dns = FakeDns::start().await;
    dns.a_records(
        "mixed.test",
        &[Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 1)],
    );
    dns.a_records(
        "mixed2.test",
        &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::LOCALHOST],
    );
    dns.a("fine.test", Ipv4Addr::LOCALHOST);
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.nameservers = vec![dns.addr];
    })
    .await;
    let port = site.port;
    for name in ["mixed.test", "mixed2.test"] {
        let url = format!("http://{name}:{port}/og");
        let mut res = server.get_as(preview_url(&server, &url), ALICE).await;
        assert_error(&mut res, 403, "M_FORBIDDEN").await;
    }
    assert_eq!(site.hits("/og"), 0, "nothing reached the site");
    let ok = preview(&server, &format!("http://fine.test:{port}/og")).await;
    assert_eq!(ok["og:title"], "A Blog Post");
}

/// The URL denylist refuses a domain with its subdomains, and schemes.
#[actix_web::test]
async fn url_denylist_refuses() {
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.url_denylist = ["blocked.test", "http:"]
            .into_iter()
            .filter_map(UrlPattern::parse)
            .collect();
    })
    .await;
    for url in ["https://a.blocked.test/", "http://example.org/"] {
        let mut res = server.get_as(preview_url(&server, url), ALICE).await;
        assert_error(&mut res, 403, "M_FORBIDDEN").await;
    }
}

/// Off by default: 404 `M_UNRECOGNIZED` (Synapse's answer), even without a token, on every prefix.
#[actix_web::test]
async fn disabled_by_default() {
    let server = TestServer::start().await;
    for prefix in [
        "/_matrix/client/v1/media",
        "/_matrix/media/v3",
        "/_matrix/media/r0",
        "/_matrix/client/unstable/org.matrix.msc3916/media",
    ] {
        let url = server.url(&format!(
            "{prefix}/preview_url?url=https%3A%2F%2Fexample.org"
        ));
        let mut res = server.client.get(&url).send().await.unwrap();
        assert_error(&mut res, 404, "M_UNRECOGNIZED").await;
    }
}

/// Enabled, the endpoint wants a token and a `url`, and serves the legacy prefixes too.
#[actix_web::test]
async fn auth_and_parameters() {
    let site = Site::start();
    let server = TestServer::start_with(enable).await;
    let url = preview_url(&server, &site.url("/title"));
    let mut res = server.client.get(&url).send().await.unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
    let mut res = server.get_as(&url, "wrong").await;
    assert_error(&mut res, 401, "M_UNKNOWN_TOKEN").await;
    let mut res = server
        .get_as(server.url("/_matrix/client/v1/media/preview_url"), ALICE)
        .await;
    assert_error(&mut res, 400, "M_MISSING_PARAM").await;
    let mut res = server
        .get_as(
            server.url("/_matrix/client/v1/media/preview_url?url=not%20a%20url"),
            ALICE,
        )
        .await;
    assert_error(&mut res, 400, "M_INVALID_PARAM").await;
    let legacy = server.url(&format!(
        "/_matrix/media/v3/preview_url?url={}",
        urlencode(&site.url("/title"))
    ));
    assert_eq!(server.get_as(legacy, ALICE).await.status(), 200);
}

/// Past the per-user rate, requests get 429 with `retry_after_ms`; other users are unaffected.
#[actix_web::test]
async fn rate_limited_per_user() {
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.rate_limit_burst = 2;
        c.preview.rate_limit_per_minute = 1;
    })
    .await;
    // Distinct URLs: only fetches are charged, not answers from the cache.
    let url = |n: u32| preview_url(&server, &site.url(&format!("/title?n={n}")));
    for n in 0..2 {
        assert_eq!(server.get_as(url(n), ALICE).await.status(), 200);
    }
    let mut res = server.get_as(url(2), ALICE).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 1000);
    assert_eq!(server.get_as(url(2), BOB).await.status(), 200);
}

/// The rate limit bounds fetches, not answers: with one preview a minute, a user opening a
/// room where many messages share a link gets every preview, whether it comes from the cache
/// or from the one fetch already under way.
#[actix_web::test]
async fn cached_and_shared_previews_are_not_rate_limited() {
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.rate_limit_burst = 1;
        c.preview.rate_limit_per_minute = 1;
    })
    .await;
    let cached = preview_url(&server, &site.url("/og-cached"));
    for _ in 0..10 {
        assert_eq!(server.get_as(&cached, ALICE).await.status(), 200);
    }
    assert_eq!(site.hits("/og-cached"), 1);
    // Bob's twenty requests at once join his one fetch.
    let flight = preview_url(&server, &site.url("/og-flight"));
    let statuses = futures_util::future::join_all(
        (0..20).map(|_| async { server.get_as(&flight, BOB).await.status().as_u16() }),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(site.hits("/og-flight"), 1);
    // A fetch of another URL is still limited.
    let other = preview_url(&server, &site.url("/title"));
    assert_eq!(server.get_as(&other, ALICE).await.status(), 429);
    assert_eq!(site.hits("/title"), 0);
}

/// IPv4 loopback embedded in IPv6 (IPv4-compatible, IPv4-mapped, NAT64, 6to4, Teredo) is
/// loopback: 403 before anything is contacted, by default and also when the IPv6 ranges that
/// carry it are allow-listed (as on a NAT64 network), since the IPv4 address inside is judged.
#[actix_web::test]
async fn ipv4_embedded_in_ipv6_is_judged_as_ipv4() {
    let site = Site::start();
    let port = site.port;
    let carriers = [
        "::/96",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "2002::/16",
        "2001::/32",
    ];
    for allow in [&[][..], &carriers[..]] {
        let server = TestServer::start_with(|c| {
            c.preview.enabled = true;
            c.preview.rate_limit_burst = 1000;
            c.preview.timeout_secs = 2;
            c.preview.ip_range_allowlist = allow.iter().map(|n| n.parse().unwrap()).collect();
        })
        .await;
        for host in [
            "::127.0.0.1",
            "::ffff:7f00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            let url = format!("http://[{host}]:{port}/og");
            let mut res = server.get_as(preview_url(&server, &url), ALICE).await;
            assert_error(&mut res, 403, "M_FORBIDDEN").await;
        }
    }
    assert_eq!(site.hits("/og"), 0, "nothing reached the site");
}

/// `method` on `path` as `token`: the status and the JSON body (null if none).
async fn call(
    server: &TestServer,
    method: actix_web::http::Method,
    path: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let mut res = server.send_as(method, server.url(path), token, "").await;
    let status = res.status().as_u16();
    let body = res.body().limit(1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn media_id(og: &serde_json::Value) -> String {
    og["og:image"].as_str().unwrap()["mxc://localhost/".len()..].to_owned()
}

async fn download_status(server: &TestServer, id: &str) -> u16 {
    let mut res = server.get_as(server.download_url(id), ALICE).await;
    let status = res.status().as_u16();
    if status != 200 {
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    status
}

/// Uploads `bytes` as alice, returning the media id.
async fn upload_as_alice(server: &TestServer, bytes: &[u8]) -> (u16, String) {
    let mut res = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .insert_header(("content-type", "image/jpeg"))
        .send_body(bytes.to_vec())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["content_uri"]
        .as_str()
        .map(|uri| uri["mxc://localhost/".len()..].to_owned())
        .unwrap_or_default();
    (status, id)
}

/// An image fetched for alice's preview is not alice's media: it is not in her media list,
/// her statistics, her quota or her MSC4034 usage, her one-file quota still takes an upload,
/// deleting her media leaves it, and the admin media info names no user. It is still served.
#[actix_web::test]
async fn preview_images_are_nobodys_media() {
    use actix_web::http::Method;
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.auth.admins = vec!["@bob:localhost".into()];
        c.media.user_quota_files = 1;
    })
    .await;
    let og = preview(&server, &site.url("/og")).await;
    let id = media_id(&og);
    assert_eq!(
        download(&server, og["og:image"].as_str().unwrap()).await,
        PHOTO
    );

    let alice_media = "/_synapse/admin/v1/users/@alice:localhost/media";
    let (code, body) = call(&server, Method::GET, alice_media, BOB).await;
    assert_eq!(code, 200);
    assert_eq!((&body["media"], &body["total"]), (&json!([]), &json!(0)));
    let (_, body) = call(
        &server,
        Method::GET,
        "/_synapse/admin/v1/statistics/users/media",
        BOB,
    )
    .await;
    assert_eq!(body, json!({"users": [], "total": 0}));
    let (_, body) = call(
        &server,
        Method::GET,
        "/_mxmedia/admin/v1/users/@alice:localhost/quota",
        BOB,
    )
    .await;
    assert_eq!((&body["bytes"], &body["files"]), (&json!(0), &json!(0)));
    let (code, body) = call(
        &server,
        Method::GET,
        "/_matrix/media/unstable/org.matrix.msc4034/usage",
        ALICE,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"org.matrix.msc4034.storage.used": 0, "org.matrix.msc4034.storage.files": 0})
    );
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("/_synapse/admin/v1/media/localhost/{id}"),
        BOB,
    )
    .await;
    assert_eq!(body["media_info"]["user_id"], json!(null));
    assert_eq!(body["media_info"]["media_length"], json!(PHOTO.len()));

    // Her quota of one file is all hers.
    let (code, _) = upload_as_alice(&server, b"a file of her own").await;
    assert_eq!(code, 200);
    let (code, body) = call(&server, Method::DELETE, alice_media, BOB).await;
    assert_eq!(code, 200);
    assert_eq!(body["total"], json!(1));
    assert_eq!(download_status(&server, &id).await, 200);
}

/// A preview image lives `image_ttl_secs`: once older, its id answers 404 (removed when the
/// next preview image is stored, without waiting for the minute's sweep), while alice's own
/// upload of the same bytes keeps them, and the newer image is served.
#[actix_web::test]
async fn preview_images_expire_and_spare_uploads_of_the_same_bytes() {
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.cache_ttl_secs = 1;
        c.preview.image_ttl_secs = 1;
    })
    .await;
    let (code, upload) = upload_as_alice(&server, PHOTO).await;
    assert_eq!(code, 200);
    let first = media_id(&preview(&server, &site.url("/og")).await);
    assert_eq!(download_status(&server, &first).await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = media_id(&preview(&server, &site.url("/og-cached")).await);
    assert_eq!(download_status(&server, &first).await, 404);
    assert_eq!(download_status(&server, &second).await, 200);
    assert_eq!(
        download(&server, &format!("mxc://localhost/{upload}")).await,
        PHOTO
    );

    // The minute's sweep removes the rest once they are old, and the bytes stay alice's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let swept = server
        .media
        .expire_preview_images(mxmedia::clock::now_ms() - 1000, u64::MAX)
        .await
        .unwrap();
    assert_eq!((swept.removed, swept.kept_bytes), (1, 0));
    assert_eq!(download_status(&server, &second).await, 404);
    assert_eq!(
        download(&server, &format!("mxc://localhost/{upload}")).await,
        PHOTO
    );
}

/// All preview images stay within `image_cache_max_size`: a new one pushes out the oldest,
/// which then answers 404, and the cached preview showing it goes too, so asking for that
/// preview again fetches the page and stores an image that is there.
#[actix_web::test]
async fn preview_images_stay_within_the_size_cap() {
    let site = Site::start();
    let cap = u64::try_from(PHOTO.len()).unwrap() * 3 / 2;
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.image_cache_max_size = bytesize::ByteSize::b(cap);
    })
    .await;
    let oldest = media_id(&preview(&server, &site.url("/og")).await);
    let newest = media_id(&preview(&server, &site.url("/og-other")).await);
    assert_eq!(download_status(&server, &oldest).await, 404);
    assert_eq!(download_status(&server, &newest).await, 200);
    assert_eq!(site.hits("/og"), 1);
    let again = media_id(&preview(&server, &site.url("/og")).await);
    assert_eq!(site.hits("/og"), 2);
    assert_ne!(again, oldest);
    assert_eq!(download_status(&server, &again).await, 200);
    assert_eq!(download_status(&server, &newest).await, 404);
}

/// The size cap counts stored bytes: an image shown by two pages, or equal to an upload, is one
/// blob and counts once, so it pushes out no other preview image; its bytes stop counting when
/// the last preview image holding them goes, and an upload of them stays.
#[actix_web::test]
async fn preview_images_sharing_bytes_count_once_against_the_cap() {
    let site = Site::start();
    let (photo, png) = (
        u64::try_from(PHOTO.len()).unwrap(),
        u64::try_from(PNG.len()).unwrap(),
    );
    // Room for the photo and the PNG once each, not for the photo twice.
    let cap = photo + png + png / 2;
    let server = TestServer::start_with(|c| {
        enable(c);
        c.preview.image_cache_max_size = bytesize::ByteSize::b(cap);
    })
    .await;
    let (code, upload) = upload_as_alice(&server, PNG).await;
    assert_eq!(code, 200);
    let mut ids = Vec::new();
    for page in ["/og", "/og-cached", "/og-png"] {
        ids.push(media_id(&preview(&server, &site.url(page)).await));
        // Apart in creation time, so the sweeps below can take them one at a time.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let [first, second, tiny] = <[String; 3]>::try_from(ids).unwrap();
    assert_ne!(first, second);
    assert_eq!(server.store.preview_images_bytes().unwrap(), photo + png);
    for id in [&first, &second, &tiny, &upload] {
        assert_eq!(download_status(&server, id).await, 200, "{id}: kept");
    }

    // Past their lifetime, oldest first: the photo counts until both its images are gone.
    let expire = |before: u64| {
        let media = server.media.clone();
        async move { media.expire_preview_images(before, cap).await.unwrap() }
    };
    let swept = expire(created_ms(&server, &first) + 1).await;
    assert_eq!((swept.removed, swept.removed_bytes), (1, 0), "{swept:?}");
    assert_eq!(server.store.preview_images_bytes().unwrap(), photo + png);
    let swept = expire(created_ms(&server, &second) + 1).await;
    assert_eq!(
        (swept.removed, swept.removed_bytes),
        (1, photo),
        "{swept:?}"
    );
    assert_eq!(server.store.preview_images_bytes().unwrap(), png);
    let swept = expire(u64::MAX).await;
    assert_eq!((swept.removed, swept.kept_bytes), (1, 0), "{swept:?}");
    assert_eq!(download_status(&server, &tiny).await, 404);
    assert_eq!(
        download(&server, &format!("mxc://localhost/{upload}")).await,
        PNG
    );
}

/// When the stored media `id` was created (ms).
fn created_ms(server: &TestServer, id: &str) -> u64 {
    let key = mxmedia::model::id::MediaKey {
        server_name: "localhost".parse().unwrap(),
        media_id: id.parse().unwrap(),
    };
    server.store.get_meta(&key).unwrap().unwrap().created_at
}

/// Bytes on the hash quarantine list are quarantined as a preview image too, and the preview
/// leaves the image out rather than show an id that answers 404.
#[actix_web::test]
async fn quarantined_bytes_are_left_out_of_previews() {
    use actix_web::http::Method;
    let site = Site::start();
    let server = TestServer::start_with(|c| {
        enable(c);
        c.auth.admins = vec!["@bob:localhost".into()];
    })
    .await;
    let (_, upload) = upload_as_alice(&server, PHOTO).await;
    let (code, _) = call(
        &server,
        Method::POST,
        &format!("/_synapse/admin/v1/media/quarantine/localhost/{upload}"),
        BOB,
    )
    .await;
    assert_eq!(code, 200);
    let og = preview(&server, &site.url("/og")).await;
    assert_eq!(og["og:title"], "A Blog Post");
    assert!(og.get("og:image").is_none(), "{og}");
}
