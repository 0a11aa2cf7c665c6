//! What a client learns of its own storage: MSC4034's usage endpoint and the quota limits it
//! adds to `/config` (https://github.com/matrix-org/matrix-spec-proposals/pull/4034, served at
//! its unstable path and names; no spec version has them yet).

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::common::{ALICE, BOB, TestServer, assert_error};

const USAGE: &str = "/_matrix/media/unstable/org.matrix.msc4034/usage";

async fn get(server: &TestServer, path: &str, token: &str) -> Value {
    let mut res = server.get_as(server.url(path), token).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn upload(server: &TestServer, token: &str, len: usize) {
    let res = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .insert_header(("content-type", "application/octet-stream"))
        .send_body(vec![7u8; len])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The usage endpoint answers the caller's own bytes and files, as the quota counts them
/// (uploads added, deletions taken away), and nobody else's; without a token it is 401.
#[actix_web::test]
async fn usage_reports_the_callers_own_storage() {
    let server = TestServer::start_with(|c| c.auth.admins = vec!["@alice:localhost".into()]).await;
    let mut res = server.client.get(server.url(USAGE)).send().await.unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;
    let mut res = server.get_as(server.url(USAGE), "not_a_token").await;
    assert_error(&mut res, 401, "M_UNKNOWN_TOKEN").await;

    let nothing =
        json!({"org.matrix.msc4034.storage.used": 0, "org.matrix.msc4034.storage.files": 0});
    assert_eq!(get(&server, USAGE, BOB).await, nothing);
    upload(&server, BOB, 1000).await;
    upload(&server, BOB, 234).await;
    upload(&server, ALICE, 5000).await;
    assert_eq!(
        get(&server, USAGE, BOB).await,
        json!({"org.matrix.msc4034.storage.used": 1234, "org.matrix.msc4034.storage.files": 2})
    );
    assert_eq!(
        get(&server, USAGE, ALICE).await,
        json!({"org.matrix.msc4034.storage.used": 5000, "org.matrix.msc4034.storage.files": 1})
    );
    let res = server
        .send_as(
            Method::DELETE,
            server.url("/_synapse/admin/v1/users/@bob:localhost/media"),
            ALICE,
            "",
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(get(&server, USAGE, BOB).await, nothing);
}

/// `/config` carries the caller's quota limits under MSC4034's unstable names, an admin's
/// override included, on every config path; without quotas it is `m.upload.size` alone.
#[actix_web::test]
async fn config_carries_the_callers_quota_limits() {
    let plain = TestServer::start().await;
    let body = get(&plain, "/_matrix/client/v1/media/config", BOB).await;
    assert_eq!(body, json!({"m.upload.size": 50 * 1024 * 1024}));

    let server = TestServer::start_with(|c| {
        c.auth.admins = vec!["@alice:localhost".into()];
        c.media.user_quota_bytes = bytesize::ByteSize::b(100_000);
        c.media.user_quota_files = 10;
    })
    .await;
    let limited = json!({
        "m.upload.size": 50 * 1024 * 1024,
        "org.matrix.msc4034.storage.size": 100_000,
        "org.matrix.msc4034.storage.max_files": 10,
    });
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        assert_eq!(get(&server, path, BOB).await, limited, "{path}");
    }
    let res = server
        .client
        .put(server.url("/_mxmedia/admin/v1/users/@bob:localhost/quota"))
        .bearer_auth(ALICE)
        .send_json(&json!({"max_bytes": 0, "max_files": 3}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        get(&server, "/_matrix/client/v1/media/config", BOB).await,
        json!({"m.upload.size": 50 * 1024 * 1024, "org.matrix.msc4034.storage.max_files": 3})
    );
    assert_eq!(
        get(&server, "/_matrix/client/v1/media/config", ALICE).await,
        limited
    );
}
