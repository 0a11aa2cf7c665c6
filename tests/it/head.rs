//! `HEAD` never starts work: on a thumbnail it answers from what is stored (no render), on
//! remote media from what was fetched before (no request to the origin); otherwise 404.

use crate::{
    common::{ALICE, TestServer},
    fake_media::{File, MediaHost},
    fake_remote::{FakeRemote, Pki},
    federation::federate,
};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");
const PNG: &[u8] = include_bytes!("../fixtures/tiny_64x64.png");

/// Status, content type and content length of a request, and its body's length.
async fn answer(
    server: &TestServer,
    method: actix_web::http::Method,
    url: &str,
) -> (u16, String, Option<String>, usize) {
    let mut res = server
        .client
        .request(method, url)
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (content_type, length) = (
        header("content-type").unwrap_or_default(),
        header("content-length"),
    );
    let body = res.body().limit(16 << 20).await.unwrap();
    (res.status().as_u16(), content_type, length, body.len())
}

async fn head(server: &TestServer, url: &str) -> (u16, String, Option<String>, usize) {
    answer(server, actix_web::http::Method::HEAD, url).await
}

async fn get(server: &TestServer, url: &str) -> (u16, String, Option<String>, usize) {
    answer(server, actix_web::http::Method::GET, url).await
}

/// `HEAD` on a thumbnail of local media renders nothing: 404 until a `GET` has rendered it,
/// then exactly `GET`'s headers; an original small enough is answered as `GET` would.
#[actix_web::test]
async fn head_on_local_thumbnail_never_renders() {
    let server = TestServer::start().await;
    let id = server.upload(PHOTO, "image/jpeg", None).await;
    let url = server.url(&format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{id}?width=320&height=240"
    ));
    for _ in 0..3 {
        let (status, _, _, body) = head(&server, &url).await;
        assert_eq!((status, body), (404, 0));
    }
    assert_eq!(
        server.media.thumbnails_generated(),
        0,
        "HEAD rendered nothing"
    );

    let (status, content_type, length, body) = get(&server, &url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(length, Some(body.to_string()));
    assert_eq!(server.media.thumbnails_generated(), 1);
    let (status, head_type, head_length, head_body) = head(&server, &url).await;
    assert_eq!(status, 200);
    assert_eq!(
        (head_type, head_length, head_body),
        (content_type, length, 0)
    );

    // An original smaller than asked is what GET sends too; nothing to render.
    let small = server.upload(PNG, "image/png", None).await;
    let url = server.url(&format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{small}?width=96&height=96"
    ));
    let (status, content_type, length, _) = head(&server, &url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(length, Some(PNG.len().to_string()));
    assert_eq!(server.media.thumbnails_generated(), 1);
    // Unknown media stays 404, as for GET.
    let (status, _, _, _) = head(
        &server,
        &server.url("/_matrix/client/v1/media/thumbnail/localhost/nothing_here?width=96&height=96"),
    )
    .await;
    assert_eq!(status, 404);
}

/// `HEAD` on a download or a thumbnail of remote media not fetched yet is 404 and no request
/// at all reaches the origin; once a `GET` has fetched the file, `HEAD` on the download gives
/// `GET`'s headers, and on a thumbnail still renders nothing until one is stored.
#[actix_web::test]
async fn head_on_uncached_remote_media_never_fetches() {
    let pki = Pki::new();
    let host = MediaHost::new();
    let remote = FakeRemote::start_with(&pki, "127.0.0.1:0", None, MediaHost::routes(&host));
    host.serve_as(remote.name(), remote.port);
    let server = TestServer::start_with(|c| federate(c, &pki, None)).await;
    host.trust("localhost", server.dir.path());
    let mut file = File::new(PHOTO.to_vec(), "image/jpeg");
    file.thumbnail = Some((PNG.to_vec(), "image/png".into()));
    host.put("photo", file);
    let hits = || -> usize { remote.state.hits.lock().unwrap().values().sum() };
    let name = remote.name();
    let download = server.url(&format!(
        "/_matrix/client/v1/media/download/{}/photo",
        name.as_str()
    ));
    let thumbnail = server.url(&format!(
        "/_matrix/client/v1/media/thumbnail/{}/photo?width=320&height=240",
        name.as_str()
    ));

    for url in [&download, &thumbnail] {
        let (status, _, _, body) = head(&server, url).await;
        assert_eq!((status, body), (404, 0), "{url}");
    }
    assert_eq!(hits(), 0, "no request reached the origin");
    assert_eq!(server.media.thumbnails_generated(), 0);

    let (status, content_type, _, body) = get(&server, &download).await;
    assert_eq!(
        (status, content_type.as_str(), body),
        (200, "image/jpeg", PHOTO.len())
    );
    let fetched = hits();
    assert!(fetched > 0);
    let (status, head_type, head_length, head_body) = head(&server, &download).await;
    assert_eq!(status, 200);
    // The first GET followed the fetch, chunked; HEAD answers from the stored file.
    assert_eq!(
        (head_type, head_length, head_body),
        (content_type, Some(PHOTO.len().to_string()), 0)
    );

    // The original is stored now, its 320x240 thumbnail is not: still 404, still no render.
    let (status, _, _, _) = head(&server, &thumbnail).await;
    assert_eq!(status, 404);
    assert_eq!(server.media.thumbnails_generated(), 0);
    let (status, content_type, length, _) = get(&server, &thumbnail).await;
    assert_eq!(status, 200);
    assert_eq!(server.media.thumbnails_generated(), 1);
    let (status, head_type, head_length, _) = head(&server, &thumbnail).await;
    assert_eq!(status, 200);
    assert_eq!((head_type, head_length), (content_type, length));
    assert_eq!(hits(), fetched, "nothing more was asked of the origin");
}
