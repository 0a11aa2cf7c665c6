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
