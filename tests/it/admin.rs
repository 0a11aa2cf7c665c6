//! The media admin API: who may call it, what a removal takes away, and what it leaves.

use actix_web::http::Method;

use crate::common::{ALICE, BOB, TestServer, assert_error, pseudo_random};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");

async fn admin(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let mut res = server.send_as(method, server.url(path), token, "").await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn status(server: &TestServer, path: &str) -> u16 {
    server.get_as(server.url(path), BOB).await.status().as_u16()
}

/// Only listed admins may remove media. A removed id answers 404 for downloads and thumbnails;
/// another id with the same bytes keeps them, and with the last one the blob file goes too.
#[actix_web::test]
async fn admins_remove_local_media() {
    let server = TestServer::start_with(|c| c.auth.admins = vec!["@alice:localhost".into()]).await;
    let (a, b) = (
        server.upload(PHOTO, "image/jpeg", None).await,
        server.upload(PHOTO, "image/jpeg", None).await,
    );
    let big = server
        .upload(&pseudo_random(400 * 1024, 3), "application/pdf", None)
        .await;
    let thumb = |id: &str| {
        format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?width=96&height=96&method=crop")
    };
    let download = |id: &str| format!("/_matrix/client/v1/media/download/localhost/{id}");
    assert_eq!(status(&server, &thumb(&a)).await, 200);
    assert_eq!(server.stored_files().0, 1, "the 400 KiB file");

    let path = format!("/_mxmedia/admin/v1/media/localhost/{a}");
    let mut res = server
        .send_as(Method::DELETE, server.url(&path), BOB, "")
        .await;
    assert_error(&mut res, 403, "M_FORBIDDEN").await;
    let mut res = server
        .client
        .delete(server.url(&path))
        .send()
        .await
        .unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
    assert_eq!(
        status(&server, &download(&a)).await,
        200,
        "refused calls change nothing"
    );

    let (code, body) = admin(&server, Method::DELETE, &path, ALICE).await;
    assert_eq!((code, body), (200, serde_json::json!({"deleted": true})));
    assert_eq!(status(&server, &download(&a)).await, 404);
    assert_eq!(status(&server, &thumb(&a)).await, 404);
    assert_eq!(
        status(&server, &download(&b)).await,
        200,
        "same bytes, other id"
    );
    assert_eq!(status(&server, &thumb(&b)).await, 200);
    let (code, body) = admin(&server, Method::DELETE, &path, ALICE).await;
    assert_eq!((code, body), (200, serde_json::json!({"deleted": false})));

    // Synapse's paths, as moderation tools call them.
    let synapse = format!("/_synapse/admin/v1/media/localhost/{big}");
    let (code, body) = admin(&server, Method::DELETE, &synapse, ALICE).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        serde_json::json!({"deleted_media": [big], "total": 1})
    );
    assert_eq!(server.stored_files(), (0, 0));
    let quarantine = format!("/_synapse/admin/v1/media/quarantine/localhost/{b}");
    let (code, body) = admin(&server, Method::POST, &quarantine, ALICE).await;
    assert_eq!((code, body), (200, serde_json::json!({})));
    assert_eq!(status(&server, &download(&b)).await, 404);

    let (code, body) = admin(
        &server,
        Method::DELETE,
        "/_mxmedia/admin/v1/media/localhost/bad%20id",
        ALICE,
    )
    .await;
    assert_eq!(
        (code, &body["errcode"]),
        (404, &serde_json::json!("M_NOT_FOUND")),
        "as downloads"
    );
}

/// The admin removal of `id` (a local media id), as alice.
async fn remove(server: &TestServer, id: &str) {
    let path = format!("/_mxmedia/admin/v1/media/localhost/{id}");
    let (code, _) = admin(server, Method::DELETE, &path, ALICE).await;
    assert_eq!(code, 200);
}

/// Once a removal has answered, every new download of the id answers 404, however many
/// downloads were filling the metadata and blob caches at that moment; and none of those
/// racing it answers 500. Looped, small (cached) and large (file) media alike.
#[actix_web::test]
async fn removal_wins_against_concurrent_downloads() {
    use std::{cell::Cell, time::Instant};

    let server = TestServer::start_with(|c| c.auth.admins = vec!["@alice:localhost".into()]).await;
    for round in 0..24u64 {
        let len = if round % 2 == 0 { 3_000 } else { 300 * 1024 };
        let bytes = pseudo_random(len, 900 + round);
        let id = server
            .upload(&bytes, "application/octet-stream", None)
            .await;
        let url = server.download_url(&id);
        let removed_at: Cell<Option<Instant>> = Cell::new(None);
        let downloads = futures_util::future::join_all((0..50).map(|_| async {
            let mut seen = Vec::new();
            loop {
                let started = Instant::now();
                let mut res = server.get_as(&url, BOB).await;
                let status = res.status().as_u16();
                if status == 200 {
                    let body = res.body().limit(1 << 20).await.unwrap();
                    assert!(body == bytes, "right bytes or none");
                }
                seen.push((started, status));
                // Keep asking until well after the removal answered.
                if removed_at
                    .get()
                    .is_some_and(|at| started > at && seen.iter().filter(|s| s.0 > at).count() > 2)
                {
                    return seen;
                }
            }
        }));
        let removal = async {
            // Let the first downloads reach the store and the caches, then remove.
            tokio::time::sleep(std::time::Duration::from_millis(round % 6)).await;
            remove(&server, &id).await;
            removed_at.set(Some(Instant::now()));
        };
        let (seen, ()) = futures_util::join!(downloads, removal);
        let at = removed_at.get().unwrap();
        for (started, status) in seen.into_iter().flatten() {
            assert_ne!(status, 500, "round {round}: a download racing the removal");
            if started > at {
                assert_eq!(
                    status, 404,
                    "round {round}: asked after the removal answered"
                );
            }
        }
    }
    assert_eq!(server.stored_files(), (0, 0));
}

/// A large JPEG of `width`×`height`: small on the wire, slow to decode.
fn big_jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x / 20) as u8, (y / 16) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A thumbnail that finishes rendering after its source was removed is not stored: no record
/// and no blob file outlive the source, and the request answers 404 (never 500).
#[actix_web::test]
async fn thumbnail_render_racing_removal_stores_nothing() {
    use std::time::{Duration, Instant};

    // Made before the server starts: the test's runtime would stall while they are encoded.
    // Bytes after the end-of-image marker make each one a different blob; decoders ignore them.
    let base = big_jpeg(4800, 3600);
    let sources: Vec<Vec<u8>> = (0..4u8)
        .map(|seed| [base.as_slice(), &[seed; 16]].concat())
        .collect();
    let server = TestServer::start_with(|c| {
        c.auth.admins = vec!["@alice:localhost".into()];
        // Thumbnails are files too, so one kept shows on disk.
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
        c.thumbnails.workers = 1;
    })
    .await;
    let thumb = |id: &str| {
        server.url(&format!(
            "/_matrix/client/v1/media/thumbnail/localhost/{id}?width=96&height=96&method=crop"
        ))
    };
    // How long a cold thumbnail of such a source takes on this machine.
    let id = server.upload(&sources[0], "image/jpeg", None).await;
    let started = Instant::now();
    assert_eq!(server.get_as(thumb(&id), BOB).await.status(), 200);
    let render = started.elapsed();
    remove(&server, &id).await;
    assert_eq!(server.stored_files(), (0, 0));

    // Removed while its render runs: at a third, half and two thirds of the way.
    for (i, part) in [3u32, 2, 3].into_iter().enumerate() {
        let at = if i == 2 {
            render * 2 / part
        } else {
            render / part
        };
        let id = server.upload(&sources[i + 1], "image/jpeg", None).await;
        let request = async { server.get_as(thumb(&id), BOB).await.status().as_u16() };
        let removal = async {
            tokio::time::sleep(at).await;
            remove(&server, &id).await;
        };
        let (status, ()) = futures_util::join!(request, removal);
        assert!(
            status == 404 || status == 200,
            "removed after {at:?} of {render:?}: {status}"
        );
        // Let a render still running finish, then look for what it left.
        tokio::time::sleep(render.max(Duration::from_millis(200))).await;
        assert_eq!(
            server.stored_files(),
            (0, 0),
            "removed after {at:?} of {render:?}: nothing of it is kept"
        );
    }
}
