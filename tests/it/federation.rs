//! Serving media over federation: X-Matrix checks against keys fetched from real HTTPS remote
//! servers on loopback (after real discovery through a fake DNS), and the multipart answers.

use std::net::Ipv4Addr;

use mxmedia::config::{Config, TrustedKeyServer};

use crate::{
    common::{TestServer, assert_error, pseudo_random},
    fake_dns::FakeDns,
    fake_remote::{FakeRemote, Pki},
};

const PNG: &[u8] = include_bytes!("../fixtures/tiny_64x64.png");

pub(crate) fn federate(config: &mut Config, pki: &Pki, dns: Option<&FakeDns>) {
    // Loopback is where the test's remote servers live; nothing else is relaxed.
    config.federation.ip_range_denylist = Vec::new();
    config.federation.ca_file = Some(pki.ca_file.clone());
    if let Some(dns) = dns {
        config.federation.nameservers = vec![dns.addr];
    }
}

/// One part of a `multipart/mixed` body: its headers (lower-case names) and bytes.
pub(crate) struct Part {
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Part {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a multipart body by its boundary, strictly: CRLF line ends, a closing delimiter.
pub(crate) fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .expect("multipart/mixed content type");
    let delimiter = format!("\r\n--{boundary}");
    let text = body;
    let positions: Vec<usize> = text
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert!(positions.len() >= 2, "at least two delimiters");
    let last = *positions.last().unwrap();
    assert_eq!(
        &text[last + delimiter.len()..],
        b"--\r\n",
        "closing delimiter ends the body"
    );
    positions
        .windows(2)
        .map(|w| {
            let part = &text[w[0] + delimiter.len() + 2..w[1]];
            let split = part
                .windows(4)
                .position(|x| x == b"\r\n\r\n")
                .expect("headers end");
            let headers = std::str::from_utf8(&part[..split])
                .unwrap()
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.trim().to_ascii_lowercase(), v.trim().to_owned())
                })
                .collect();
            Part {
                headers,
                body: part[split + 4..].to_vec(),
            }
        })
        .collect()
}

/// GETs `uri` on `server` as `remote` would, signed with its key for `destination`.
async fn fed_get(
    server: &TestServer,
    remote: &FakeRemote,
    uri: &str,
    destination: &str,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
> {
    server
        .client
        .get(server.url(uri))
        .insert_header(("authorization", remote.sign("GET", uri, destination)))
        .send()
        .await
        .unwrap()
}

/// A remote server, and mxmedia federating with it.
async fn setup() -> (Pki, FakeRemote, TestServer) {
    let pki = Pki::new();
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", None);
    let server = TestServer::start_with(|c| federate(c, &pki, None)).await;
    (pki, remote, server)
}

/// A successful federation answer: 200, two parts, the first `{}` as JSON.
async fn fed_multipart(server: &TestServer, remote: &FakeRemote, uri: &str) -> Vec<Part> {
    let mut res = fed_get(server, remote, uri, "localhost").await;
    assert_eq!(res.status(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body = res.body().limit(2 << 20).await.unwrap();
    let parts = parse_multipart(&content_type, &body);
    assert_eq!(parts.len(), 2, "exactly two parts");
    assert_eq!(parts[0].header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&parts[0].body).unwrap(),
        serde_json::json!({})
    );
    parts
}

#[actix_web::test]
async fn signed_download_returns_multipart_with_the_bytes() {
    let (_pki, remote, server) = setup().await;
    // One file kept in sled, one large enough to live in a blob file.
    for (len, name) in [(1000, "small.bin"), (700 * 1024, "large.bin")] {
        let bytes = pseudo_random(len, len as u64);
        let id = server
            .upload(&bytes, "application/octet-stream", Some(name))
            .await;
        let uri = format!("/_matrix/federation/v1/media/download/{id}?timeout_ms=20000");
        let parts = fed_multipart(&server, &remote, &uri).await;
        assert_eq!(
            parts[1].header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(
            parts[1].header("content-disposition"),
            Some(format!("attachment; filename={name}").as_str())
        );
        assert!(parts[1].body == bytes, "bytes equal for {name}");
    }
    // Keys were fetched once, then served from the cache.
    assert_eq!(remote.hits("/_matrix/key/v2/server"), 1);
}

#[actix_web::test]
async fn signed_thumbnail_returns_an_image_part() {
    let (_pki, remote, server) = setup().await;
    let photo = include_bytes!("../fixtures/photo_640x480.jpg");
    let id = server.upload(photo, "image/jpeg", Some("photo.jpg")).await;
    let uri = format!("/_matrix/federation/v1/media/thumbnail/{id}?width=32&height=32&method=crop");
    let parts = fed_multipart(&server, &remote, &uri).await;
    assert_eq!(parts[1].header("content-type"), Some("image/jpeg"));
    assert!(
        parts[1]
            .header("content-disposition")
            .unwrap()
            .starts_with("inline")
    );
    let image = image::load_from_memory(&parts[1].body).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
}

#[actix_web::test]
async fn bad_credentials_are_refused() {
    let (_pki, remote, server) = setup().await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");

    // No header at all.
    let mut res = server.client.get(server.url(&uri)).send().await.unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    // A header that is not X-Matrix (an access token) does not count either.
    let mut res = server
        .client
        .get(server.url(&uri))
        .bearer_auth(crate::common::ALICE)
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    // Malformed X-Matrix.
    let mut res = server
        .client
        .get(server.url(&uri))
        .insert_header(("authorization", "X-Matrix origin=,key=\"ed25519:x\""))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    // Addressed to another server.
    let mut res = fed_get(&server, &remote, &uri, "elsewhere.example").await;
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    // Signed for another URI: the signature does not verify for this one.
    let other = format!("{uri}?timeout_ms=1");
    let mut res = server
        .client
        .get(server.url(&uri))
        .insert_header(("authorization", remote.sign("GET", &other, "localhost")))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    // Signed with a key the origin does not publish.
    let published = remote.state.key.lock().unwrap().clone();
    *remote.state.key.lock().unwrap() = mxmedia_proto::SigningKey::generate("other").unwrap();
    let forged = remote.sign("GET", &uri, "localhost");
    *remote.state.key.lock().unwrap() = published;
    let mut res = server
        .client
        .get(server.url(&uri))
        .insert_header(("authorization", forged))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    // And the genuine request still works.
    let res = fed_get(&server, &remote, &uri, "localhost").await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn expired_keys_are_refused() {
    let pki = Pki::new();
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", None);
    remote
        .state
        .valid_for_ms
        .store(-60_000, std::sync::atomic::Ordering::SeqCst);
    let server = TestServer::start_with(|c| federate(c, &pki, None)).await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let mut res = fed_get(&server, &remote, &uri, "localhost").await;
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
}

#[actix_web::test]
async fn only_our_existing_media_is_served() {
    let (_pki, remote, server) = setup().await;
    for uri in [
        "/_matrix/federation/v1/media/download/NoSuchMedia",
        "/_matrix/federation/v1/media/download/bad%2F..%2Fid",
        "/_matrix/federation/v1/media/thumbnail/NoSuchMedia?width=32&height=32",
    ] {
        let mut res = fed_get(&server, &remote, uri, "localhost").await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    // Remote media is never answered here, and neither is a request claiming to be us.
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let mut res = server
        .client
        .get(server.url(&uri))
        .insert_header((
            "authorization",
            format!(
                "X-Matrix origin=localhost,destination=localhost,key=\"ed25519:a\",sig=\"{}\"",
                "A".repeat(86)
            ),
        ))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
}

/// Fifty requests from an origin we have never seen cause one key fetch.
#[actix_web::test]
async fn concurrent_requests_fetch_keys_once() {
    let (_pki, remote, server) = setup().await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let requests = (0..50).map(|_| fed_get(&server, &remote, &uri, "localhost"));
    for res in futures_util::future::join_all(requests).await {
        assert_eq!(res.status(), 200);
    }
    assert_eq!(remote.hits("/_matrix/key/v2/server"), 1);
}

/// `wk.test` delegates to `delegated.test:<port>` with `.well-known`; the keys are fetched there
/// with the delegated name as Host and certificate name.
#[actix_web::test]
async fn well_known_delegation_is_followed() {
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    // The well-known host needs port 443 of its own loopback address.
    let well_known = FakeRemote::start(&pki, "127.0.0.87:443", Some("wk.test"));
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", Some("wk.test"));
    *well_known.state.well_known.lock().unwrap() = Some(format!("delegated.test:{}", remote.port));
    dns.a("wk.test", Ipv4Addr::new(127, 0, 0, 87));
    dns.a("delegated.test", Ipv4Addr::LOCALHOST);
    let server = TestServer::start_with(|c| federate(c, &pki, Some(&dns))).await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let res = fed_get(&server, &remote, &uri, "localhost").await;
    assert_eq!(res.status(), 200);
    assert_eq!(well_known.hits("/.well-known/matrix/server"), 1);
    assert_eq!(remote.hits("/_matrix/key/v2/server"), 1);
    assert_eq!(
        remote.state.last_host.lock().unwrap().as_deref(),
        Some(format!("delegated.test:{}", remote.port).as_str())
    );
    well_known.stop().await;
}

/// A server name with an explicit port is contacted there, without `.well-known` or SRV.
#[actix_web::test]
async fn explicit_port_server_name() {
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    dns.a("remote.test", Ipv4Addr::LOCALHOST);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let remote = FakeRemote::start(
        &pki,
        &format!("127.0.0.1:{port}"),
        Some(&format!("remote.test:{port}")),
    );
    let server = TestServer::start_with(|c| federate(c, &pki, Some(&dns))).await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let res = fed_get(&server, &remote, &uri, "localhost").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        remote.state.last_host.lock().unwrap().as_deref(),
        Some(format!("remote.test:{port}").as_str())
    );
}

/// `srv.test` has no `.well-known`; its `_matrix-fed._tcp` SRV record points at another host
/// and port, while Host and the certificate name stay `srv.test`.
#[actix_web::test]
async fn srv_record_is_followed() {
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", Some("srv.test"));
    dns.srv("_matrix-fed._tcp.srv.test", "target.test", remote.port);
    dns.a("target.test", Ipv4Addr::LOCALHOST);
    let server = TestServer::start_with(|c| federate(c, &pki, Some(&dns))).await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let res = fed_get(&server, &remote, &uri, "localhost").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        remote.state.last_host.lock().unwrap().as_deref(),
        Some("srv.test")
    );
}

/// When the origin cannot be reached, a trusted notary's copy of its keys is used.
#[actix_web::test]
async fn notary_vouches_for_an_unreachable_origin() {
    let pki = Pki::new();
    let origin = FakeRemote::start(&pki, "127.0.0.1:0", None);
    let notary = FakeRemote::start(&pki, "127.0.0.1:0", None);
    notary
        .state
        .vouch_for
        .lock()
        .unwrap()
        .insert(origin.name().to_string(), origin.key_response());
    origin.stop().await;
    let notary_name = notary.name();
    let server = TestServer::start_with(|c| {
        federate(c, &pki, None);
        c.federation.trusted_key_servers = vec![TrustedKeyServer {
            server_name: notary_name,
            verify_keys: Default::default(),
        }];
    })
    .await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let res = fed_get(&server, &origin, &uri, "localhost").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        notary.hits(&format!("/_matrix/key/v2/query/{}", origin.name())),
        1
    );
    // The vouched-for key is the one checked: another key under the same id does not pass.
    *origin.state.key.lock().unwrap() = mxmedia_proto::SigningKey::generate("remote1").unwrap();
    let uri = format!("{uri}?timeout_ms=5");
    let res = fed_get(&server, &origin, &uri, "localhost").await;
    assert_eq!(res.status(), 401);
}

/// Keys fetched before a restart are used after it, without asking the origin again.
#[actix_web::test]
async fn key_cache_survives_restart() {
    use crate::process::{free_port, spawn_with, upload, wait_ready};
    let pki = Pki::new();
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", None);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MXMEDIA_FEDERATION__IP_RANGE_DENYLIST", "[]".to_owned()),
        (
            "MXMEDIA_FEDERATION__CA_FILE",
            pki.ca_file.display().to_string(),
        ),
    ];
    let port = free_port();
    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let id = upload(&proc.base, crate::common::ALICE, PNG.to_vec()).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let get = |base: String| {
        let auth = remote.sign("GET", &uri, "localhost");
        let url = format!("{base}{uri}");
        async move {
            crate::common::client()
                .get(url)
                .insert_header(("authorization", auth))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(proc.base.clone()).await, 200);
    assert_eq!(remote.hits("/_matrix/key/v2/server"), 1);
    drop(proc); // SIGKILL: the key record must already be on disk or be fetched again
    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    assert_eq!(get(proc.base.clone()).await, 200);
    assert_eq!(
        remote.hits("/_matrix/key/v2/server"),
        1,
        "served from the key cache after restart"
    );
}

/// With the default denylist, an origin on loopback is never contacted: its requests fail.
#[actix_web::test]
async fn denylisted_origin_is_never_contacted() {
    let pki = Pki::new();
    let remote = FakeRemote::start(&pki, "127.0.0.1:0", None);
    let server = TestServer::start_with(|c| {
        c.federation.ca_file = Some(pki.ca_file.clone());
    })
    .await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let mut res = fed_get(&server, &remote, &uri, "localhost").await;
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    assert_eq!(remote.hits("/_matrix/key/v2/server"), 0);
}

/// A server with several keys may send one header per key: the one that verifies counts.
#[actix_web::test]
async fn one_valid_header_among_several_suffices() {
    let (_pki, remote, server) = setup().await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let res = server
        .client
        .get(server.url(&uri))
        .append_header(("authorization", "X-Matrix garbage"))
        .append_header(("authorization", remote.sign("GET", "/other", "localhost")))
        .append_header(("authorization", remote.sign("GET", &uri, "localhost")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// `/_matrix/key/v2/server` is ours to answer only when configured; then it publishes our key,
/// self-signed, in a form remote servers accept.
#[actix_web::test]
async fn server_keys_endpoint_is_opt_in() {
    let server = TestServer::start().await;
    let mut res = server
        .client
        .get(server.url("/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 404, "M_UNRECOGNIZED").await;

    let server = TestServer::start_with(|c| c.federation.serve_server_keys = true).await;
    let mut res = server
        .client
        .get(server.url("/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let name: mxmedia_proto::ServerName = "localhost".parse().unwrap();
    let keys = mxmedia_proto::validate_server_keys(&name, &body, now).unwrap();
    let ours = mxmedia_proto::SigningKey::from_key_file(
        &std::fs::read_to_string(server.dir.path().join("signing.key")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(
        keys.verify_keys.get(ours.key_id()),
        Some(&ours.verify_key())
    );
    assert!(
        keys.valid_until_ts > now + 3600 * 1000,
        "valid for over an hour"
    );
}

/// An X-Matrix header naming `origin`, with a well-formed signature no key will verify.
fn bogus_x_matrix(origin: &str) -> String {
    format!(
        "X-Matrix origin={origin},destination=localhost,key=\"ed25519:a\",sig=\"{}\"",
        "A".repeat(86)
    )
}

/// The distinct `<label>.<suffix>` names the fake DNS was asked about (SRV names included).
fn origins_queried(dns: &FakeDns, suffix: &str) -> std::collections::HashSet<String> {
    let tail = format!(".{suffix}.");
    dns.queries_ending(suffix)
        .iter()
        .filter_map(|q| q.strip_suffix(&tail)?.rsplit('.').next().map(str::to_owned))
        .collect()
}

/// A request carrying fifty X-Matrix headers, each naming another unknown origin, makes us
/// discover (and fetch keys for) at most one of them, and is refused with 401.
#[actix_web::test]
async fn many_x_matrix_headers_cause_one_discovery() {
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    let server = TestServer::start_with(|c| federate(c, &pki, Some(&dns))).await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let mut request = server.client.get(server.url(&uri));
    for i in 0..50 {
        request =
            request.append_header(("authorization", bogus_x_matrix(&format!("o{i}.many.test"))));
    }
    let mut res = request.send().await.unwrap();
    assert_error(&mut res, 401, "M_UNAUTHORIZED").await;
    let discovered = origins_queried(&dns, "many.test");
    assert_eq!(
        discovered.len(),
        usize::from(mxmedia::federation::keyring::FETCHES_PER_REQUEST),
        "origins looked up: {discovered:?}"
    );
}

/// However many made-up origins a flood of requests names at once, at most
/// `FETCH_CONCURRENCY` key fetches are under way together; the others are refused at once
/// with 429 (so a genuine server retries), none is let in.
#[actix_web::test]
async fn flood_of_new_origins_is_held_to_the_fetch_budget() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    const FLOOD: usize = 60;
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    // A server that accepts connections and never answers: every fetch started stays open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    for i in 0..FLOOD {
        dns.a(&format!("f{i}.flood.test"), Ipv4Addr::LOCALHOST);
    }
    // Fetches started stay stalled this long: longer than the flood takes to arrive.
    let server = TestServer::start_with(|c| {
        federate(c, &pki, Some(&dns));
        c.federation.connect_timeout_secs = 5;
        c.federation.request_timeout_secs = 5;
    })
    .await;
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    let requests = (0..FLOOD).map(|i| {
        server
            .client
            .get(server.url(&uri))
            .insert_header((
                "authorization",
                bogus_x_matrix(&format!("f{i}.flood.test:{port}")),
            ))
            .send()
    });
    let mut responses: Vec<_> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    let fetches = accepted.load(Ordering::SeqCst);
    let budget = mxmedia::federation::keyring::FETCH_CONCURRENCY;
    assert!(
        fetches > 0 && fetches <= budget,
        "{fetches} fetches at once"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= FLOOD - budget, "{refused} refused: {statuses:?}");
    // Refusals carry the Matrix rate-limit error.
    let refusal = responses.iter_mut().find(|r| r.status() == 429).unwrap();
    assert_error(refusal, 429, "M_LIMIT_EXCEEDED").await;
}

/// Requests the fake remote got whose path mentions `needle`.
fn hits_containing(remote: &FakeRemote, needle: &str) -> usize {
    remote
        .state
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.contains(needle))
        .map(|(_, n)| n)
        .sum()
}

/// An SRV pin lasts as long as the SRV record: once its TTL has passed, a server that moved
/// is reached at its new address, not the one discovery chose before.
#[actix_web::test]
async fn srv_pin_expires_with_the_record() {
    let pki = Pki::new();
    let dns = FakeDns::start().await;
    dns.set_ttl(1);
    let old = FakeRemote::start(&pki, "127.0.0.1:0", Some("srv.test"));
    let new = FakeRemote::start(&pki, "127.0.0.1:0", Some("srv.test"));
    dns.srv("_matrix-fed._tcp.srv.test", "target.test", old.port);
    dns.a("target.test", Ipv4Addr::LOCALHOST);
    let server = TestServer::start_with(|c| federate(c, &pki, Some(&dns))).await;
    let download =
        |id: &str| server.url(&format!("/_matrix/client/v1/media/download/srv.test/{id}"));
    server
        .get_as(download("before"), crate::common::ALICE)
        .await;
    assert!(
        hits_containing(&old, "before") > 0,
        "first fetch went to the SRV target"
    );
    dns.srv("_matrix-fed._tcp.srv.test", "target.test", new.port);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.get_as(download("after"), crate::common::ALICE).await;
    assert_eq!(
        hits_containing(&old, "after"),
        0,
        "the expired pin was not used"
    );
    assert!(
        hits_containing(&new, "after") > 0,
        "the new SRV target was asked"
    );
}

/// Keys kept on disk go once they can no longer verify anything: the periodic sweep removes
/// them, and the origin's next request fetches them again and is served.
#[actix_web::test]
async fn kept_keys_past_their_validity_are_swept_and_fetched_again() {
    use std::sync::atomic::Ordering;
    let (_pki, remote, server) = setup().await;
    remote.state.valid_for_ms.store(1_500, Ordering::SeqCst);
    let id = server.upload(PNG, "image/png", None).await;
    let uri = format!("/_matrix/federation/v1/media/download/{id}");
    assert_eq!(
        fed_get(&server, &remote, &uri, "localhost").await.status(),
        200
    );
    let origin = remote.name().to_string();
    let kept = server.store.get_server_keys(&origin).unwrap();
    assert!(kept.is_some(), "the keys are kept on disk");

    let ring = mxmedia::federation::keyring::KeyRing::new(server.store.clone(), &[]);
    let bounds = mxmedia::store::server_keys::KeyBounds::default();
    let swept = ring.sweep(mxmedia::clock::now_ms(), bounds).await.unwrap();
    assert_eq!((swept.expired, swept.kept), (0, 1), "still valid: kept");

    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    let swept = ring.sweep(mxmedia::clock::now_ms(), bounds).await.unwrap();
    assert_eq!((swept.expired, swept.kept), (1, 0), "{swept:?}");
    assert_eq!(server.store.get_server_keys(&origin).unwrap(), None);

    remote
        .state
        .valid_for_ms
        .store(24 * 3600 * 1000, Ordering::SeqCst);
    assert_eq!(
        fed_get(&server, &remote, &uri, "localhost").await.status(),
        200
    );
    assert_eq!(remote.hits("/_matrix/key/v2/server"), 2, "fetched again");
    assert!(server.store.get_server_keys(&origin).unwrap().is_some());
}
