//! Remote media through the federation fetch cache, against a real HTTPS remote on loopback
//! that checks mxmedia's X-Matrix signatures: one upstream request however many clients ask,
//! the legacy fallback, `Location` parts, lenient parsing, and every failure answered right
//! with nothing stored.

use std::time::{Duration, Instant};

use actix_web::web;
use futures_util::future::join_all;
use mxmedia::config::Config;

use crate::{
    common::{ALICE, TestServer, Tmpfs, assert_error, count_files, pseudo_random},
    fake_media::{File, Gate, MediaHost, Mode},
    fake_remote::{FakeRemote, Pki},
    federation::federate,
};

const PNG: &[u8] = include_bytes!("../fixtures/tiny_64x64.png");
pub(crate) const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");
pub(crate) const FED_DOWNLOAD: &str = "/_matrix/federation/v1/media/download";
pub(crate) const FED_THUMBNAIL: &str = "/_matrix/federation/v1/media/thumbnail";

pub(crate) struct Setup {
    _pki: Pki,
    pub(crate) remote: FakeRemote,
    pub(crate) host: web::Data<MediaHost>,
    pub(crate) server: TestServer,
}

impl Setup {
    pub(crate) async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let pki = Pki::new();
        let host = MediaHost::new();
        let remote = FakeRemote::start_with(&pki, "127.0.0.1:0", None, MediaHost::routes(&host));
        host.serve_as(remote.name(), remote.port);
        let server = TestServer::start_with(|c| {
            federate(c, &pki, None);
            tweak(c);
        })
        .await;
        host.trust("localhost", &server.config.data_dir);
        Self {
            _pki: pki,
            remote,
            host,
            server,
        }
    }

    /// A set-up in which alice is an admin, for the moderation tests.
    async fn moderated(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start(|c| {
            c.auth.admins = vec!["@alice:localhost".into()];
            tweak(c);
        })
        .await
    }

    /// `prefix/{remote}/{id}`: an admin path naming the remote's media `id`.
    fn media_path(&self, prefix: &str, id: &str) -> String {
        format!("{prefix}/{}/{id}", self.remote.name().as_str())
    }

    pub(crate) fn download_url(&self, id: &str) -> String {
        let name = self.remote.name();
        self.server.url(&format!(
            "/_matrix/client/v1/media/download/{}/{id}",
            name.as_str()
        ))
    }

    pub(crate) fn thumbnail_url(&self, id: &str, query: &str) -> String {
        let name = self.remote.name();
        self.server.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{}/{id}?{query}",
            name.as_str()
        ))
    }

    /// GETs `url` as alice: status, content type and body.
    pub(crate) async fn get(&self, url: &str) -> (u16, String, Vec<u8>) {
        let mut res = self.server.get_as(url, ALICE).await;
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = res.body().limit(64 << 20).await.unwrap().to_vec();
        (res.status().as_u16(), content_type, body)
    }

    pub(crate) fn signatures_were_valid(&self) {
        assert_eq!(
            self.host
                .bad_signatures
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "every request to the remote was signed by mxmedia"
        );
    }
}

/// Fifty clients asking at once for one uncached remote file cause exactly one upstream
/// request, and all get the same bytes; later requests are served from the store.
#[actix_web::test]
async fn concurrent_downloads_share_one_fetch() {
    let setup = Setup::start(|_| {}).await;
    let bytes = pseudo_random(700 * 1024, 5);
    let mut file = File::new(bytes.clone(), "application/pdf");
    file.filename = Some("report.pdf".into());
    file.delay = Duration::from_millis(300);
    setup.host.put("shared", file);

    let url = setup.download_url("shared");
    let results = join_all((0..50).map(|_| setup.get(&url))).await;
    for (status, content_type, body) in &results {
        assert_eq!(*status, 200);
        assert_eq!(content_type, "application/pdf");
        assert!(*body == bytes, "identical bytes");
    }
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/shared")), 1);

    let mut res = setup.server.get_as(&url, ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "attachment; filename=report.pdf"
    );
    assert!(res.body().limit(1 << 20).await.unwrap() == bytes);
    assert_eq!(
        setup.remote.hits(&format!("{FED_DOWNLOAD}/shared")),
        1,
        "served from the store"
    );
    setup.signatures_were_valid();
}

/// The same for a thumbnail: one request for the remote's thumbnail, kept and reused.
#[actix_web::test]
async fn concurrent_thumbnails_share_one_fetch() {
    let setup = Setup::start(|_| {}).await;
    let mut file = File::new(PHOTO.to_vec(), "image/jpeg");
    file.thumbnail = Some((PNG.to_vec(), "image/png".into()));
    file.delay = Duration::from_millis(300);
    setup.host.put("pic", file);

    let url = setup.thumbnail_url("pic", "width=64&height=64&method=scale");
    let results = join_all((0..50).map(|_| setup.get(&url))).await;
    for (status, content_type, body) in &results {
        assert_eq!(*status, 200);
        assert_eq!(content_type, "image/png");
        assert_eq!(body, PNG);
    }
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/pic")), 1);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/pic")), 0);
    assert_eq!(setup.get(&url).await.2, PNG);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/pic")), 1);
    setup.signatures_were_valid();
}

/// A remote that cannot thumbnail gets its original fetched, and the thumbnail is made here.
#[actix_web::test]
async fn thumbnail_made_here_when_remote_has_none() {
    let setup = Setup::start(|_| {}).await;
    setup
        .host
        .put("photo", File::new(PHOTO.to_vec(), "image/jpeg"));
    let (status, content_type, body) = setup
        .get(&setup.thumbnail_url("photo", "width=32&height=32&method=crop"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "image/jpeg");
    let image = image::load_from_memory(&body).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/photo")), 1);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/photo")), 1);

    // Turned off, the remote's refusal is the answer.
    let setup = Setup::start(|c| c.media.remote_thumbnail_fallback = false).await;
    setup
        .host
        .put("photo", File::new(PHOTO.to_vec(), "image/jpeg"));
    let url = setup.thumbnail_url("photo", "width=32&height=32&method=crop");
    let mut res = setup.server.get_as(&url, ALICE).await;
    assert_error(&mut res, 502, "M_UNKNOWN").await;
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/photo")), 0);
}

/// A remote without the federation media API is asked on `/_matrix/media/v3` with
/// `allow_remote=false`, and remembered as such: the next file goes there directly.
#[actix_web::test]
async fn legacy_fallback_is_used_and_remembered() {
    let setup = Setup::start(|_| {}).await;
    let server = setup.remote.name();
    for id in ["old1", "old2"] {
        let mut file = File::new(pseudo_random(2000, 9), "image/gif");
        file.mode = Mode::LegacyOnly;
        setup.host.put(id, file);
    }
    let (status, content_type, body) = setup.get(&setup.download_url("old1")).await;
    assert_eq!((status, content_type.as_str()), (200, "image/gif"));
    assert_eq!(body, pseudo_random(2000, 9));
    let legacy = |id: &str| format!("/_matrix/media/v3/download/{}/{id}", server.as_str());
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/old1")), 1);
    assert_eq!(setup.remote.hits(&legacy("old1")), 1);

    assert_eq!(setup.get(&setup.download_url("old2")).await.0, 200);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/old2")), 0);
    assert_eq!(setup.remote.hits(&legacy("old2")), 1);
    setup.signatures_were_valid();
}

/// A `Location` part is followed (through a relative redirect) with a plain GET, and the
/// type and name come from where the bytes are.
#[actix_web::test]
async fn location_part_is_followed() {
    let setup = Setup::start(|_| {}).await;
    let mut file = File::new(pseudo_random(5000, 3), "video/mp4");
    file.filename = Some("clip.mp4".into());
    file.mode = Mode::Location;
    setup.host.put("vid", file);
    let mut res = setup.server.get_as(setup.download_url("vid"), ALICE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("content-type").unwrap(), "video/mp4");
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "inline; filename=clip.mp4"
    );
    assert_eq!(res.body().await.unwrap(), pseudo_random(5000, 3));
    assert_eq!(setup.remote.hits("/cdn/vid"), 1);
    assert_eq!(setup.remote.hits("/cdn-final/vid"), 1);
}

/// Quoted boundary, preamble, LF-only lines, no closing `--`: accepted as real servers send it.
#[actix_web::test]
async fn lenient_multipart_is_accepted() {
    let setup = Setup::start(|_| {}).await;
    let mut bytes = b"first line\nsecond line\r\n\n".to_vec();
    bytes.extend(pseudo_random(3000, 4));
    let mut file = File::new(bytes.clone(), "text/plain");
    file.mode = Mode::Quirky;
    setup.host.put("quirk", file);
    let (status, content_type, body) = setup.get(&setup.download_url("quirk")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; charset=UTF-8");
    assert!(body == bytes, "bytes intact");
}

/// Every way a remote fails before the media's bytes begin gets its error, nothing is stored,
/// and the failure is remembered for a while instead of asking again (a failure midway is
/// `remote_stream`'s).
#[actix_web::test]
async fn remote_failures_give_errors_and_store_nothing() {
    let setup = Setup::start(|c| c.media.max_remote_size = bytesize::ByteSize::mib(1)).await;
    let cases = [
        (Mode::NotFound, 404, "M_NOT_FOUND"),
        (Mode::ServerError, 502, "M_UNKNOWN"),
        (Mode::HugeDeclared, 502, "M_TOO_LARGE"),
        (Mode::Malformed, 502, "M_UNKNOWN"),
    ];
    for (i, (mode, status, errcode)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        let mut file = File::new(pseudo_random(600 * 1024, i as u64), "image/png");
        file.mode = mode;
        setup.host.put(&id, file);
        for _ in 0..2 {
            let mut res = setup.server.get_as(setup.download_url(&id), ALICE).await;
            assert_error(&mut res, status, errcode).await;
        }
        assert_eq!(
            setup.remote.hits(&format!("{FED_DOWNLOAD}/{id}")),
            1,
            "{mode:?}: the failure is remembered"
        );
        assert_eq!(
            setup.server.stored_files(),
            (0, 0),
            "{mode:?}: nothing stored"
        );
    }
    // Media the remote never had.
    let mut res = setup.server.get_as(setup.download_url("nope"), ALICE).await;
    assert_error(&mut res, 404, "M_NOT_FOUND").await;
    setup.signatures_were_valid();
}

/// A remote that does not answer in time gives 504, and is not waited for again at once.
#[actix_web::test]
async fn slow_remote_times_out() {
    let setup = Setup::start(|c| c.federation.request_timeout_secs = 1).await;
    let mut file = File::new(PNG.to_vec(), "image/png");
    file.delay = Duration::from_secs(5);
    setup.host.put("slow", file);
    let started = Instant::now();
    let mut res = setup.server.get_as(setup.download_url("slow"), ALICE).await;
    assert_error(&mut res, 504, "M_UNKNOWN").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let mut res = setup.server.get_as(setup.download_url("slow"), ALICE).await;
    assert_error(&mut res, 504, "M_UNKNOWN").await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/slow")), 1);
    assert_eq!(setup.server.stored_files(), (0, 0));
}

/// `allow_remote=false` on the deprecated endpoints answers 404 without asking the remote.
#[actix_web::test]
async fn allow_remote_false_is_honoured() {
    let setup = Setup::start(|c| c.media.legacy_unauthenticated_downloads = true).await;
    setup.host.put("pic", File::new(PNG.to_vec(), "image/png"));
    let name = setup.remote.name();
    let legacy = |kind: &str, query: &str| {
        setup.server.url(&format!(
            "/_matrix/media/v3/{kind}/{}/pic?{query}",
            name.as_str()
        ))
    };
    for url in [
        legacy("download", "allow_remote=false"),
        legacy("thumbnail", "width=32&height=32&allow_remote=false"),
    ] {
        let mut res = setup.server.client.get(url).send().await.unwrap();
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/pic")), 0);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/pic")), 0);
    // Allowed (the default), the same media is fetched.
    let mut res = setup
        .server
        .client
        .get(legacy("download", "allow_remote=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body().await.unwrap(), PNG);
}

/// Media named with our own server name is ours: never fetched over federation, even when
/// a server of that name answers federation requests.
#[actix_web::test]
async fn own_server_name_is_never_fetched() {
    let pki = Pki::new();
    let host = MediaHost::new();
    let remote = FakeRemote::start_with(&pki, "127.0.0.1:0", None, MediaHost::routes(&host));
    host.serve_as(remote.name(), remote.port);
    host.put("mine", File::new(PNG.to_vec(), "image/png"));
    let own_name = remote.name();
    let server = TestServer::start_with(|c| {
        federate(c, &pki, None);
        c.server_name = own_name.clone();
    })
    .await;
    for path in ["download", "thumbnail"] {
        let url = server.url(&format!(
            "/_matrix/client/v1/media/{path}/{own_name}/mine?width=32&height=32"
        ));
        let mut res = server.get_as(url, ALICE).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(remote.hits(&format!("{FED_DOWNLOAD}/mine")), 0);
    assert_eq!(remote.hits(&format!("{FED_THUMBNAIL}/mine")), 0);
}

/// Fetched remote media is kept: after a restart of the binary it is served from the store,
/// with the origin gone.
#[actix_web::test]
async fn restart_serves_remote_media_from_store() {
    use crate::process::{free_port, spawn_with, wait_ready};

    let pki = Pki::new();
    let host = MediaHost::new();
    let remote = FakeRemote::start_with(&pki, "127.0.0.1:0", None, MediaHost::routes(&host));
    host.serve_as(remote.name(), remote.port);
    let bytes = pseudo_random(400 * 1024, 77);
    host.put("kept", File::new(bytes.clone(), "image/webp"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("MXMEDIA_FEDERATION__IP_RANGE_DENYLIST", "[]".to_owned()),
        (
            "MXMEDIA_FEDERATION__CA_FILE",
            pki.ca_file.display().to_string(),
        ),
    ];
    let url = |base: &str| {
        format!(
            "{base}/_matrix/client/v1/media/download/{}/kept",
            remote.name().as_str()
        )
    };
    let fetch = |url: String| async move {
        let mut res = crate::common::client()
            .get(url)
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.body().limit(1 << 20).await.unwrap().to_vec())
    };

    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    host.trust("localhost", dir.path());
    let (status, body) = fetch(url(&proc.base)).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    assert_eq!(remote.hits(&format!("{FED_DOWNLOAD}/kept")), 1);
    drop(proc);

    remote.stop().await;
    let proc = spawn_with(dir.path(), port, true, &env);
    wait_ready(&proc.base).await;
    let (status, body) = fetch(url(&proc.base)).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "served from the store");
    assert_eq!(remote.hits(&format!("{FED_DOWNLOAD}/kept")), 1);
}

/// With a retention of one day, media and thumbnails fetched from a remote and not asked for
/// since are removed by the next sweep after a day, blob files included; asking again fetches
/// them again.
#[actix_web::test]
async fn retention_removes_idle_remote_media() {
    const DAY: u64 = 24 * 60 * 60 * 1000;
    let setup = Setup::start(|c| c.media.remote_retention_days = 1).await;
    let before = mxmedia::clock::now_ms();
    let bytes = pseudo_random(300 * 1024, 11);
    setup
        .host
        .put("old", File::new(bytes.clone(), "image/webp"));
    let mut pic = File::new(PHOTO.to_vec(), "image/jpeg");
    pic.thumbnail = Some((PNG.to_vec(), "image/png".into()));
    setup.host.put("pic", pic);
    let (download, thumbnail) = (
        setup.download_url("old"),
        setup.thumbnail_url("pic", "width=64&height=64&method=scale"),
    );
    assert!(setup.get(&download).await.2 == bytes);
    assert_eq!(setup.get(&thumbnail).await.2, PNG);
    assert_eq!(
        setup.server.stored_files(),
        (1, 0),
        "the download is a blob file"
    );

    let now = mxmedia::clock::now_ms();
    let media = &setup.server.media;
    media.record_access().await.unwrap();
    for id in ["old", "pic"] {
        let key = mxmedia::model::id::MediaKey {
            server_name: setup.remote.name().clone(),
            media_id: id.parse().unwrap(),
        };
        let asked = media.store().last_access(&key).unwrap();
        assert!(
            asked.is_some_and(|t| (before..=now).contains(&t)),
            "{id}: {asked:?}"
        );
    }
    assert_eq!(media.sweep_remote(now).await.unwrap().removed, 0);
    let swept = media.sweep_remote(now + DAY + 60_000).await.unwrap();
    assert_eq!(swept.removed, 2, "{swept:?}");
    assert_eq!(swept.removed_bytes, (bytes.len() + PNG.len()) as u64);
    assert_eq!(setup.server.stored_files(), (0, 0));

    assert!(setup.get(&download).await.2 == bytes);
    assert_eq!(setup.get(&thumbnail).await.2, PNG);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/old")), 2);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/pic")), 2);
    assert_eq!(media.sweep_remote(now + DAY / 2).await.unwrap().removed, 0);
    setup.signatures_were_valid();
}

/// Remote media an admin quarantined answers 404, original and thumbnail, with its bytes kept
/// for review; removed, it is gone; either way it is never fetched from its origin again.
#[actix_web::test]
async fn admin_removal_blocks_remote_media() {
    let setup = Setup::moderated(|_| {}).await;
    let bytes = pseudo_random(300 * 1024, 12);
    let mut file = File::new(bytes.clone(), "image/jpeg");
    file.thumbnail = Some((PNG.to_vec(), "image/png".into()));
    setup.host.put("bad", file);
    let (download, thumbnail) = (
        setup.download_url("bad"),
        setup.thumbnail_url("bad", "width=64&height=64&method=scale"),
    );
    // The thumbnail first: with the original here, it would be made here instead.
    assert!(setup.get(&thumbnail).await.2 == PNG);
    assert!(setup.get(&download).await.2 == bytes);

    let path = setup.media_path("/_synapse/admin/v1/media/quarantine", "bad");
    let (code, body) = admin_send(&setup, actix_web::http::Method::POST, &path).await;
    assert_eq!(code, 200);
    assert_eq!(body.as_ref(), b"{}");
    assert_eq!(
        setup.server.stored_files(),
        (1, 0),
        "quarantine keeps the bytes for review"
    );
    for url in [&download, &thumbnail] {
        let mut res = setup.server.get_as(url, ALICE).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    // Removal takes the bytes and keeps the id blocked.
    let path = setup.media_path("/_synapse/admin/v1/media", "bad");
    let (code, _) = admin_send(&setup, actix_web::http::Method::DELETE, &path).await;
    assert_eq!(code, 200);
    assert_eq!(setup.server.stored_files(), (0, 0));
    for url in [&download, &thumbnail] {
        let mut res = setup.server.get_as(url, ALICE).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/bad")), 1);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/bad")), 1);
    setup.signatures_were_valid();
}

/// An origin whose answer never gets past its framing (an endless preamble, an endless header
/// block, an endless metadata part) fails the fetch with 502 after a few KiB of it, while it
/// is still sending, and nothing is stored: mxmedia does not hold up to `max_remote_size`
/// (100 MiB here) of it in memory first.
#[actix_web::test]
async fn endless_multipart_framing_fails_fast() {
    let setup = Setup::start(|_| {}).await;
    for (i, mode) in [
        Mode::EndlessPreamble,
        Mode::EndlessHeaders,
        Mode::EndlessMetadata,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("endless{i}");
        let mut file = File::new(PNG.to_vec(), "image/png");
        file.mode = mode;
        setup.host.put(&id, file);
        let sent = &setup.host.endless_sent;
        sent.store(0, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        let mut res = setup.server.get_as(setup.download_url(&id), ALICE).await;
        let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert_error(&mut res, 502, "M_UNKNOWN").await;
        assert!(
            sent < 32 << 20,
            "{mode:?}: failed only after the origin sent {sent} bytes"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/{id}")), 1);
        assert_eq!(
            setup.server.stored_files(),
            (0, 0),
            "{mode:?}: nothing stored"
        );
    }
    setup.signatures_were_valid();
}

const SVG: &[u8] = b"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"64\" height=\"64\">\
<script>alert(document.domain)</script></svg>";

/// A remote thumbnail is kept only when its bytes are JPEG, PNG, GIF or WebP, whatever the
/// origin declares: an SVG (declared as SVG or as PNG) is a failed thumbnail fetch and the
/// thumbnail is made here from the original; a PNG declared as SVG is kept as the PNG it is.
#[actix_web::test]
async fn remote_thumbnail_type_is_judged_from_bytes() {
    let setup = Setup::start(|_| {}).await;
    for (id, bytes, declared) in [
        ("svg", SVG, "image/svg+xml"),
        ("svg-as-png", SVG, "image/png"),
    ] {
        let mut file = File::new(PHOTO.to_vec(), "image/jpeg");
        file.thumbnail = Some((bytes.to_vec(), declared.into()));
        setup.host.put(id, file);
        let (status, content_type, body) = setup
            .get(&setup.thumbnail_url(id, "width=32&height=32&method=crop"))
            .await;
        assert_eq!((status, content_type.as_str()), (200, "image/jpeg"), "{id}");
        assert!(!body.windows(4).any(|w| w == b"<svg"), "{id}: SVG served");
        let image = image::load_from_memory(&body).unwrap();
        assert_eq!((image.width(), image.height()), (32, 32), "{id}");
        assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/{id}")), 1);
        assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/{id}")), 1);
    }

    let mut file = File::new(PHOTO.to_vec(), "image/jpeg");
    file.thumbnail = Some((PNG.to_vec(), "image/svg+xml".into()));
    setup.host.put("png-as-svg", file);
    let (status, content_type, body) = setup
        .get(&setup.thumbnail_url("png-as-svg", "width=64&height=64&method=scale"))
        .await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(body, PNG);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/png-as-svg")), 0);

    // Without the local fallback, the SVG is a failure, never an answer.
    let setup = Setup::start(|c| c.media.remote_thumbnail_fallback = false).await;
    let mut file = File::new(PHOTO.to_vec(), "image/jpeg");
    file.thumbnail = Some((SVG.to_vec(), "image/svg+xml".into()));
    setup.host.put("svg", file);
    let url = setup.thumbnail_url("svg", "width=32&height=32&method=crop");
    for _ in 0..2 {
        let mut res = setup.server.get_as(&url, ALICE).await;
        assert_error(&mut res, 502, "M_UNKNOWN").await;
    }
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/svg")), 0);
    setup.signatures_were_valid();
}

/// A JSON answer that never ends (what a hostile server could send for `.well-known`, its
/// server keys or a notary query, all read by `get_json`/`get_bytes`) fails at the body limit
/// while the server is still sending, and is never parsed.
#[actix_web::test]
async fn endless_json_answers_fail_at_the_limit() {
    let setup = Setup::start(|_| {}).await;
    let mut config = Config::default().federation;
    config.ip_range_denylist = Vec::new();
    config.ca_file = Some(setup._pki.ca_file.clone());
    let federation = mxmedia::federation::Federation::new(&config).unwrap();
    let client = federation.client();
    let sent = &setup.host.endless_sent;
    let started = Instant::now();
    let answer = federation
        .get_json(&client, &setup.remote.name(), "/endless.json")
        .await;
    assert!(
        matches!(answer, Err(mxmedia::federation::FetchError::TooLarge)),
        "{answer:?}"
    );
    let url = format!("https://127.0.0.1:{}/endless.json", setup.remote.port);
    let answer = federation.get_bytes(&client, &url, &[], 64 * 1024).await;
    assert!(
        matches!(answer, Err(mxmedia::federation::FetchError::TooLarge)),
        "{answer:?}"
    );
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 32 << 20, "read until the origin sent {sent} bytes");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A remote fetch and a local upload share the free-space floor: with an upload holding 12 MiB
/// of it, a 20 MiB fetch that would cross it fails (507, or a cut-off body) and leaves no
/// staging file, and the upload, resumed, is stored.
#[actix_web::test]
async fn remote_fetch_and_upload_share_the_free_space_floor() {
    if crate::garage::backend_is_s3() {
        eprintln!("skipped: with blobs in S3 an upload streams to the bucket, using no disk");
        return;
    }
    let Some(fs) = Tmpfs::mount("64m") else {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    };
    let data_dir = fs.dir.path().join("data");
    let setup = Setup::start(|c| {
        c.data_dir = data_dir.clone();
        // About 30 MiB above the floor: one 20 MiB file fits, two do not.
        c.store.min_free_space = mxmedia::config::FreeSpace::Bytes(34 << 20);
        c.media.max_remote_size = bytesize::ByteSize::mib(32);
        // The upload pauses while the fetch runs, which under a loaded machine can take long.
        c.http.body_idle_timeout_secs = 600;
    })
    .await;
    const LEN: usize = 20 << 20;
    // Where the upload pauses: with the fetch's 20 MiB on top, over the floor.
    const HELD: usize = 12 << 20;
    setup
        .host
        .put("big", File::new(pseudo_random(LEN, 7), "application/pdf"));
    let body = bytes::Bytes::from(pseudo_random(LEN, 8));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let chunks = futures_util::stream::unfold((0, Some(released)), move |(at, mut gate)| {
        let body = body.clone();
        async move {
            if at >= body.len() {
                return None;
            }
            if at >= HELD
                && let Some(gate) = gate.take()
            {
                let _ = gate.await;
            }
            let end = (at + 256 * 1024).min(body.len());
            Some((Ok::<_, std::io::Error>(body.slice(at..end)), (end, gate)))
        }
    });
    let upload = setup
        .server
        .client
        .post(setup.server.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .timeout(Duration::from_secs(600))
        .send_stream(chunks);
    let fetch = async {
        // The fetch starts once the upload's paused bytes are on disk (so reserved), not after
        // a guessed head start.
        let tmp = data_dir.join("tmp");
        let deadline = Instant::now() + Duration::from_secs(300);
        while dir_bytes(&tmp) < u64::try_from(HELD - (1 << 20)).unwrap() {
            assert!(Instant::now() < deadline, "the upload never got going");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut fetch = setup.server.get_as(setup.download_url("big"), ALICE).await;
        // The fetch loses before its bytes begin (507) or midway (a cut-off body).
        let fetched = match fetch.status().as_u16() {
            507 => {
                assert_error(&mut fetch, 507, "M_UNKNOWN").await;
                false
            }
            200 => fetch
                .body()
                .limit(LEN * 2)
                .await
                .is_ok_and(|body| body.len() == LEN),
            other => panic!("fetch answered {other}"),
        };
        // The upload goes on only once the losing fetch's staging file is gone: a client that
        // stops reading first (a slow machine's timeout) leaves the fetch running a while, and
        // its bytes still count against the floor until then.
        let deadline = Instant::now() + Duration::from_secs(300);
        while dir_bytes(&tmp) > u64::try_from(HELD + 256 * 1024).unwrap() {
            assert!(
                Instant::now() < deadline,
                "the losing fetch never let go of its bytes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = release.send(());
        fetched
    };
    let (upload, fetched) = tokio::join!(upload, fetch);
    assert!(!fetched, "the fetch crossing the floor is not served whole");
    let upload = upload.unwrap();
    assert_eq!(upload.status(), 200, "the upload is stored");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count_files(&data_dir.join("tmp")),
        0,
        "no staging file left"
    );
    assert_eq!(setup.server.blob_count(), 1, "on disk or in the bucket");
    drop(upload);
    drop(setup);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Bytes in the files directly under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// An admin's removal wins against a fetch of the same id already in flight, for originals and
/// thumbnails alike: the fetch stores nothing (no record, no blob file), the request that
/// started it and every later one get 404, and the origin is not asked again.
#[actix_web::test]
async fn removal_wins_against_a_fetch_in_flight() {
    let setup = Setup::moderated(|c| {
        // Every blob a file, so a stored one shows on disk.
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
    })
    .await;
    let gate = Gate::new();
    let mut original = File::new(pseudo_random(600 * 1024, 41), "application/pdf");
    original.gate = Some(gate.clone());
    setup.host.put("doomed", original);
    let mut pic = File::new(PHOTO.to_vec(), "image/jpeg");
    pic.thumbnail = Some((pseudo_random(8 * 1024, 42), "image/png".into()));
    pic.gate = Some(gate.clone());
    setup.host.put("doomed-pic", pic);

    let urls = [
        setup.download_url("doomed"),
        setup.thumbnail_url("doomed-pic", "width=64&height=64&method=scale"),
    ];
    let fetches = join_all(urls.iter().map(|url| setup.get(url)));
    let removals = async {
        // Both fetches are now waiting for the origin's answer.
        gate.held(2).await;
        for id in ["doomed", "doomed-pic"] {
            let path = setup.media_path("/_mxmedia/admin/v1/media", id);
            let (code, body) = admin_call(&setup, actix_web::http::Method::DELETE, &path).await;
            assert_eq!(code, 200);
            assert_eq!(
                body,
                serde_json::json!({"deleted": false}),
                "nothing stored yet"
            );
        }
        gate.open();
    };
    let (results, ()) = futures_util::join!(fetches, removals);
    for ((status, _, _), url) in results.iter().zip(&urls) {
        assert_eq!(*status, 404, "the fetch in flight lost: {url}");
    }
    for url in &urls {
        let mut res = setup.server.get_as(url, ALICE).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(setup.server.stored_files(), (0, 0), "no blob file kept");
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/doomed")), 1);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/doomed-pic")), 1);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/doomed-pic")), 0);
    setup.signatures_were_valid();
}

/// Sends `method` to an admin `path` as alice: status and body.
async fn admin_send(
    setup: &Setup,
    method: actix_web::http::Method,
    path: &str,
) -> (u16, bytes::Bytes) {
    let mut res = setup
        .server
        .send_as(method, setup.server.url(path), ALICE, "")
        .await;
    let status = res.status().as_u16();
    (status, res.body().await.unwrap())
}

/// Sends `method` to an admin `path` as alice: status and JSON body.
async fn admin_call(
    setup: &Setup,
    method: actix_web::http::Method,
    path: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = admin_send(setup, method, path).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// Bytes on the quarantine list are quarantined the moment a remote fetch stores them, before
/// anyone gets them (where Synapse still serves later remote fetches); a remote id quarantined
/// before it was ever fetched is never fetched.
#[actix_web::test]
async fn quarantined_bytes_from_a_remote_are_never_served() {
    use actix_web::http::Method;
    use sha2::Digest as _;

    let setup = Setup::moderated(|_| {}).await;
    let bad = pseudo_random(5000, 77);
    setup.host.put("evil", File::new(bad.clone(), "image/png"));
    setup
        .host
        .put("unseen", File::new(pseudo_random(100, 1), "image/png"));
    let sha = hex::encode(sha2::Sha256::digest(&bad));
    let (code, body) = admin_call(
        &setup,
        Method::POST,
        &format!("/_mxmedia/admin/v1/quarantine/hash/{sha}"),
    )
    .await;
    assert_eq!(
        (code, body),
        (
            200,
            serde_json::json!({"added": true, "quarantined_media": 0})
        )
    );
    for _ in 0..2 {
        let mut res = setup.server.get_as(setup.download_url("evil"), ALICE).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(
        setup.remote.hits(&format!("{FED_DOWNLOAD}/evil")),
        1,
        "fetched once, kept"
    );
    let (code, body) = admin_call(
        &setup,
        Method::GET,
        &setup.media_path("/_synapse/admin/v1/media", "evil"),
    )
    .await;
    assert_eq!(code, 200);
    let info = &body["media_info"];
    assert_eq!(info["quarantined_by"], "@alice:localhost");
    assert_eq!(info["user_id"], serde_json::Value::Null);
    assert_eq!(info["sha256"], serde_json::json!(sha));
    assert_eq!(info["safe_from_quarantine"], serde_json::Value::Null);

    let (code, _) = admin_call(
        &setup,
        Method::POST,
        &setup.media_path("/_synapse/admin/v1/media/quarantine", "unseen"),
    )
    .await;
    assert_eq!(code, 200);
    let thumb = setup.thumbnail_url("unseen", "width=32&height=32&method=scale");
    for url in [setup.download_url("unseen"), thumb] {
        let mut res = setup.server.get_as(&url, ALICE).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/unseen")), 0);
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/unseen")), 0);
    setup.signatures_were_valid();
}

/// A remote origin's own thumbnail whose bytes are on the quarantine list is never served:
/// one kept already is quarantined with its media when the hash is listed, and one fetched
/// later quarantines its media as it is stored, before anyone gets it; the original of such
/// media is then never fetched.
#[actix_web::test]
async fn quarantined_bytes_in_a_remote_thumbnail_are_never_served() {
    use actix_web::http::Method;
    use sha2::Digest as _;

    let setup = Setup::moderated(|_| {}).await;
    for id in ["early", "late"] {
        let mut file = File::new(PHOTO.to_vec(), "image/jpeg");
        file.thumbnail = Some((PNG.to_vec(), "image/png".into()));
        setup.host.put(id, file);
    }
    let query = "width=64&height=64&method=scale";
    assert_eq!(
        setup.get(&setup.thumbnail_url("early", query)).await.2,
        PNG,
        "not listed yet"
    );
    let sha = hex::encode(sha2::Sha256::digest(PNG));
    let (code, body) = admin_call(
        &setup,
        Method::POST,
        &format!("/_mxmedia/admin/v1/quarantine/hash/{sha}"),
    )
    .await;
    assert_eq!(
        (code, body),
        (
            200,
            serde_json::json!({"added": true, "quarantined_media": 1})
        ),
        "the kept thumbnail's media is found by its bytes"
    );
    for id in ["early", "late"] {
        for url in [setup.thumbnail_url(id, query), setup.download_url(id)] {
            let mut res = setup.server.get_as(&url, ALICE).await;
            assert_error(&mut res, 404, "M_NOT_FOUND").await;
        }
        assert_eq!(
            setup.remote.hits(&format!("{FED_DOWNLOAD}/{id}")),
            0,
            "{id}"
        );
    }
    assert_eq!(setup.remote.hits(&format!("{FED_THUMBNAIL}/early")), 1);
    assert_eq!(
        setup.remote.hits(&format!("{FED_THUMBNAIL}/late")),
        1,
        "fetched once, kept for review"
    );
    let late = mxmedia::model::id::MediaKey {
        server_name: setup.remote.name().clone(),
        media_id: "late".parse().unwrap(),
    };
    let state = setup.server.media.store().quarantine_state(&late).unwrap();
    assert_eq!(state.quarantined.unwrap().by, "@alice:localhost");

    // Taken off the list, the bytes are served again.
    let (code, _) = admin_call(
        &setup,
        Method::DELETE,
        &format!("/_mxmedia/admin/v1/quarantine/hash/{sha}"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(setup.get(&setup.thumbnail_url("late", query)).await.2, PNG);
    setup.signatures_were_valid();
}

/// `purge_media_cache` removes remote media not asked for since `before_ts` (quarantined media
/// kept for review); purged media is fetched again when asked for.
#[actix_web::test]
async fn purge_media_cache_removes_idle_remote_media() {
    use actix_web::http::Method;

    let setup = Setup::moderated(|_| {}).await;
    let bytes = pseudo_random(3000, 5);
    setup.host.put("old", File::new(bytes.clone(), "image/png"));
    setup
        .host
        .put("held", File::new(pseudo_random(3000, 6), "image/png"));
    setup
        .host
        .put("recent", File::new(pseudo_random(3000, 7), "image/png"));
    assert_eq!(setup.get(&setup.download_url("old")).await.0, 200);
    assert_eq!(setup.get(&setup.download_url("held")).await.0, 200);
    assert_eq!(setup.get(&setup.download_url("recent")).await.0, 200);
    admin_call(
        &setup,
        Method::POST,
        &setup.media_path("/_synapse/admin/v1/media/quarantine", "held"),
    )
    .await;
    let mut res = setup
        .server
        .send_as(
            Method::POST,
            setup.server.url("/_synapse/admin/v1/purge_media_cache"),
            ALICE,
            "",
        )
        .await;
    assert_error(&mut res, 400, "M_MISSING_PARAM").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (code, body) = admin_call(
        &setup,
        Method::POST,
        &format!(
            "/_synapse/admin/v1/purge_media_cache?before_ts={}",
            now - 60_000
        ),
    )
    .await;
    assert_eq!((code, body), (200, serde_json::json!({"deleted": 0})));
    // Fetched before `now`, but asked for again since: by last access, it stays.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(setup.get(&setup.download_url("recent")).await.0, 200);
    let (code, body) = admin_call(
        &setup,
        Method::POST,
        &format!(
            "/_synapse/admin/v1/purge_media_cache?before_ts={}",
            now + 10
        ),
    )
    .await;
    assert_eq!((code, body), (200, serde_json::json!({"deleted": 1})));
    assert_eq!(setup.get(&setup.download_url("recent")).await.0, 200);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/recent")), 1);
    assert!(setup.get(&setup.download_url("old")).await.2 == bytes);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/old")), 2);
    let (_, body) = admin_call(
        &setup,
        Method::GET,
        &setup.media_path("/_synapse/admin/v1/media", "held"),
    )
    .await;
    assert_eq!(
        body["media_info"]["media_length"], 3000,
        "quarantined, kept"
    );
}

/// One user can make this server start only so many remote fetches a minute (429
/// `M_LIMIT_EXCEEDED` with `retry_after_ms`, the origin never asked); what is stored already is
/// served without charge, and other users have budgets of their own.
#[actix_web::test]
async fn remote_fetches_per_user_are_limited_and_cache_hits_free() {
    let setup = Setup::start(|c| c.media.user_remote_fetch_rate_per_minute = 2).await;
    for id in ["a", "b", "c"] {
        setup.host.put(
            id,
            File::new(
                pseudo_random(2000, u64::from(id.as_bytes()[0])),
                "image/png",
            ),
        );
    }
    assert_eq!(setup.get(&setup.download_url("a")).await.0, 200);
    assert_eq!(setup.get(&setup.download_url("b")).await.0, 200);
    let mut res = setup.server.get_as(setup.download_url("c"), ALICE).await;
    assert_eq!(res.status(), 429);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 1000, "{body}");
    let thumb = setup.thumbnail_url("c", "width=32&height=32&method=scale");
    assert_eq!(setup.server.get_as(&thumb, ALICE).await.status(), 429);
    assert_eq!(setup.remote.hits(&format!("{FED_DOWNLOAD}/c")), 0);
    for _ in 0..5 {
        assert_eq!(
            setup.get(&setup.download_url("a")).await.0,
            200,
            "stored: free"
        );
    }
    let res = setup
        .server
        .get_as(setup.download_url("c"), crate::common::BOB)
        .await;
    assert_eq!(res.status(), 200, "bob's budget is his own");
}
