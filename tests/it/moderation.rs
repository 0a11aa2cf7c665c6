//! Moderation through the admin APIs: who is an admin (the config list, or the homeserver's
//! word), Synapse's admin media routes with their shapes, pages and errors, quarantine that
//! keeps the bytes and hides every copy of them, and the shared hash list.

use std::{
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::Method, web};
use serde_json::{Value, json};

use crate::common::{ALICE, BOB, TestServer, assert_error, pseudo_random};

const PHOTO: &[u8] = include_bytes!("../fixtures/photo_640x480.jpg");

async fn call(server: &TestServer, method: Method, path: &str, token: &str) -> (u16, Value) {
    let mut res = server.send_as(method, server.url(path), token, "").await;
    let status = res.status().as_u16();
    let body = res.body().limit(1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn download_status(server: &TestServer, id: &str) -> u16 {
    server
        .get_as(server.download_url(id), BOB)
        .await
        .status()
        .as_u16()
}

fn admin_alice(c: &mut mxmedia::config::Config) {
    c.auth.admins = vec!["@alice:localhost".into()];
}

/// Uploads `bytes` as bob and returns the media id.
async fn upload_as_bob(server: &TestServer, bytes: &[u8], name: &str) -> String {
    let mut res = server
        .client
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(BOB)
        .insert_header(("content-type", "application/octet-stream"))
        .send_body(bytes.to_vec())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["content_uri"].as_str().unwrap()["mxc://localhost/".len()..].to_owned()
}

/// A stand-in homeserver: `whoami` for `carol_tok` (an admin) and `dave_tok` (not one), Synapse's
/// admin check answered to admins only, and the media of the room `!spam:localhost`.
struct FakeHomeserver {
    url: String,
    admin_checks: Arc<AtomicUsize>,
    room_media: Arc<Mutex<Value>>,
    handle: actix_web::dev::ServerHandle,
}

fn bearer(req: &HttpRequest) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned()
}

fn not_admin() -> HttpResponse {
    HttpResponse::Forbidden()
        .json(json!({"errcode": "M_FORBIDDEN", "error": "You are not a server admin"}))
}

async fn whoami(req: HttpRequest) -> HttpResponse {
    match bearer(&req).as_str() {
        "carol_tok" => HttpResponse::Ok().json(json!({"user_id": "@carol:localhost"})),
        "dave_tok" => HttpResponse::Ok().json(json!({"user_id": "@dave:localhost"})),
        _ => HttpResponse::Unauthorized()
            .json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": "nope"})),
    }
}

async fn is_admin(
    req: HttpRequest,
    path: web::Path<String>,
    checks: web::Data<AtomicUsize>,
) -> HttpResponse {
    checks.fetch_add(1, Ordering::SeqCst);
    if bearer(&req) != "carol_tok" {
        return not_admin();
    }
    HttpResponse::Ok().json(json!({"admin": path.as_str() == "@carol:localhost"}))
}

async fn room_media(
    req: HttpRequest,
    path: web::Path<String>,
    media: web::Data<Mutex<Value>>,
) -> HttpResponse {
    if bearer(&req) != "carol_tok" {
        return not_admin();
    }
    if path.as_str() != "!spam:localhost" {
        return HttpResponse::NotFound()
            .json(json!({"errcode": "M_NOT_FOUND", "error": "Room not found"}));
    }
    let listed = media.lock().unwrap().clone();
    HttpResponse::Ok().json(listed)
}

impl FakeHomeserver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let admin_checks = Arc::new(AtomicUsize::new(0));
        let room = Arc::new(Mutex::new(json!({"local": [], "remote": []})));
        let (checks, media) = (
            web::Data::from(admin_checks.clone()),
            web::Data::from(room.clone()),
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(checks.clone())
                .app_data(media.clone())
                .route("/_matrix/client/v3/account/whoami", web::get().to(whoami))
                .route(
                    "/_synapse/admin/v1/users/{user}/admin",
                    web::get().to(is_admin),
                )
                .route(
                    "/_synapse/admin/v1/room/{room}/media",
                    web::get().to(room_media),
                )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url,
            admin_checks,
            room_media: room,
            handle,
        }
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

/// A homeserver admin is an admin here too: asked with their own token, the answer cached;
/// a user the homeserver does not call admin gets 403 `M_FORBIDDEN`, no token 401. A room's
/// media, which only the homeserver knows, is quarantined as the homeserver lists it.
#[actix_web::test]
async fn homeserver_admins_and_room_quarantine() {
    let hs = FakeHomeserver::start();
    let hs_url = hs.url.clone();
    let server = TestServer::start_with(|c| c.auth.homeserver_url = Some(hs_url)).await;
    let (spam, other_spam, kept) = (
        server
            .upload(&pseudo_random(5000, 1), "image/png", None)
            .await,
        server
            .upload(&pseudo_random(5000, 2), "image/png", None)
            .await,
        server
            .upload(&pseudo_random(5000, 3), "image/png", None)
            .await,
    );
    let info = format!("/_synapse/admin/v1/media/localhost/{kept}");
    let (code, body) = call(&server, Method::GET, &info, "carol_tok").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["media_info"]["media_id"], json!(kept));
    let (code, _) = call(&server, Method::GET, &info, "carol_tok").await;
    assert_eq!(code, 200);
    assert_eq!(
        hs.admin_checks.load(Ordering::SeqCst),
        1,
        "the homeserver's answer is cached"
    );
    for token in ["dave_tok", ALICE] {
        let mut res = server
            .send_as(Method::GET, server.url(&info), token, "")
            .await;
        assert_error(&mut res, 403, "M_FORBIDDEN").await;
    }
    let mut res = server.client.get(server.url(&info)).send().await.unwrap();
    assert_error(&mut res, 401, "M_MISSING_TOKEN").await;

    *hs.room_media.lock().unwrap() = json!({
        "local": [
            format!("mxc://localhost/{spam}"),
            format!("mxc://localhost/{other_spam}"),
            "not an mxc uri",
        ],
        "remote": ["mxc://elsewhere.test/neverfetched"],
    });
    let room = "/_synapse/admin/v1/room/!spam:localhost/media/quarantine";
    let (code, _) = call(&server, Method::POST, room, "dave_tok").await;
    assert_eq!(code, 403, "non-admins change nothing");
    assert_eq!(download_status(&server, &spam).await, 200);
    let (code, body) = call(&server, Method::POST, room, "carol_tok").await;
    assert_eq!((code, body), (200, json!({"num_quarantined": 2})));
    assert_eq!(download_status(&server, &spam).await, 404);
    assert_eq!(download_status(&server, &other_spam).await, 404);
    assert_eq!(download_status(&server, &kept).await, 200);
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("/_synapse/admin/v1/media/localhost/{spam}"),
        "carol_tok",
    )
    .await;
    assert_eq!(
        body["media_info"]["quarantined_by"],
        json!("@carol:localhost")
    );
    let (code, body) = call(
        &server,
        Method::POST,
        "/_synapse/admin/v1/room/!nope:localhost/media/quarantine",
        "carol_tok",
    )
    .await;
    assert_eq!((code, &body["errcode"]), (404, &json!("M_NOT_FOUND")));
    // The legacy path does the same.
    let legacy = "/_synapse/admin/v1/quarantine_media/!spam:localhost";
    let (code, body) = call(&server, Method::POST, legacy, "carol_tok").await;
    assert_eq!(
        (code, body),
        (200, json!({"num_quarantined": 0})),
        "already quarantined"
    );
}

/// Quarantine keeps the bytes but serves them to nobody, under any id holding them: existing
/// copies, and uploads made later. Protected media is passed by. Unquarantine undoes it all.
#[actix_web::test]
async fn quarantine_hides_every_copy_and_keeps_the_bytes() {
    let server = TestServer::start_with(|c| {
        admin_alice(c);
        c.store.inline_blob_max = bytesize::ByteSize::kib(1);
    })
    .await;
    let bad = pseudo_random(20_000, 7);
    let (first, copy, sticker, other) = (
        upload_as_bob(&server, &bad, "a.bin").await,
        upload_as_bob(&server, &bad, "b.bin").await,
        upload_as_bob(&server, &bad, "sticker.bin").await,
        upload_as_bob(&server, &pseudo_random(20_000, 8), "c.bin").await,
    );
    let photo = server.upload(PHOTO, "image/jpeg", None).await;
    let thumb = format!(
        "/_matrix/client/v1/media/thumbnail/localhost/{photo}?width=96&height=96&method=crop"
    );
    assert_eq!(server.get_as(server.url(&thumb), BOB).await.status(), 200);
    let protect = format!("/_synapse/admin/v1/media/protect/{sticker}");
    assert_eq!(
        call(&server, Method::POST, &protect, ALICE).await,
        (200, json!({}))
    );

    let quarantine = format!("/_synapse/admin/v1/media/quarantine/localhost/{first}");
    let (code, _) = call(&server, Method::POST, &quarantine, BOB).await;
    assert_eq!(code, 403);
    assert_eq!(
        download_status(&server, &first).await,
        200,
        "refused calls change nothing"
    );
    assert_eq!(
        call(&server, Method::POST, &quarantine, ALICE).await,
        (200, json!({}))
    );
    let files = server.stored_files();
    for id in [&first, &copy] {
        let mut res = server.get_as(server.download_url(id), BOB).await;
        assert_error(&mut res, 404, "M_NOT_FOUND").await;
    }
    assert_eq!(download_status(&server, &sticker).await, 200, "protected");
    assert_eq!(download_status(&server, &other).await, 200);
    let later = upload_as_bob(&server, &bad, "again.bin").await;
    assert_eq!(
        download_status(&server, &later).await,
        404,
        "uploaded after"
    );

    let (_, body) = call(
        &server,
        Method::GET,
        &format!("/_synapse/admin/v1/media/localhost/{copy}"),
        ALICE,
    )
    .await;
    let info = &body["media_info"];
    assert_eq!(info["quarantined_by"], json!("@alice:localhost"));
    assert_eq!(info["user_id"], json!("@bob:localhost"));
    assert_eq!(info["media_length"], json!(20_000));
    assert_eq!(info["upload_name"], json!("b.bin"));
    assert_eq!(info["safe_from_quarantine"], json!(false));
    assert_eq!(info["media_origin"], json!("localhost"));
    assert!(info["sha256"].as_str().unwrap().len() == 64);

    // A thumbnail of quarantined media is quarantined with it.
    let photo_q = format!("/_synapse/admin/v1/media/quarantine/localhost/{photo}");
    call(&server, Method::POST, &photo_q, ALICE).await;
    assert_eq!(server.get_as(server.url(&thumb), BOB).await.status(), 404);
    assert_eq!(server.stored_files(), files, "quarantine deletes nothing");

    let unquarantine = format!("/_synapse/admin/v1/media/unquarantine/localhost/{first}");
    assert_eq!(
        call(&server, Method::POST, &unquarantine, ALICE).await,
        (200, json!({}))
    );
    for id in [&first, &copy, &later] {
        assert_eq!(
            download_status(&server, id).await,
            200,
            "released with its bytes"
        );
    }
    let fresh = upload_as_bob(&server, &bad, "fresh.bin").await;
    assert_eq!(download_status(&server, &fresh).await, 200);
    // Unprotected, the sticker goes with the next quarantine of its bytes.
    let unprotect = format!("/_synapse/admin/v1/media/unprotect/{sticker}");
    assert_eq!(
        call(&server, Method::POST, &unprotect, ALICE).await,
        (200, json!({}))
    );
    call(&server, Method::POST, &quarantine, ALICE).await;
    assert_eq!(download_status(&server, &sticker).await, 404);

    // A user's media, all at once.
    let user = "/_synapse/admin/v1/user/@bob:localhost/media/quarantine";
    let (code, body) = call(&server, Method::POST, user, ALICE).await;
    assert_eq!(code, 200);
    assert_eq!(
        body["num_quarantined"],
        json!(1),
        "only `other` was not quarantined yet"
    );
    assert_eq!(download_status(&server, &other).await, 404);
}

/// Uploads `len` pseudo-random bytes as `token` under `name`, returning the media id.
async fn upload_sized(
    server: &TestServer,
    token: &str,
    len: usize,
    seed: u64,
    name: &str,
) -> String {
    let mut res = server
        .client
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(token)
        .insert_header(("content-type", "application/octet-stream"))
        .send_body(pseudo_random(len, seed))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["content_uri"].as_str().unwrap()["mxc://localhost/".len()..].to_owned()
}

fn ids(body: &Value) -> Vec<String> {
    body["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["media_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A user's media lists as Synapse lists it: newest first by default, pages with `next_token`
/// and `total`, each field of its documented shape; other orders and directions; bad
/// parameters 400 `M_INVALID_PARAM`; a page of it deleted with the same parameters.
#[actix_web::test]
async fn user_media_lists_and_deletes_page_by_page() {
    let server = TestServer::start_with(admin_alice).await;
    let mut uploaded = Vec::new();
    for (i, len) in [300usize, 100, 500, 200, 400].into_iter().enumerate() {
        let id = upload_sized(&server, BOB, len, 40 + i as u64, &format!("f{i}.bin")).await;
        uploaded.push((id, len));
        // Distinct creation times, so "newest first" has one answer.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    upload_sized(&server, ALICE, 10, 99, "alice.bin").await;
    let list = "/_synapse/admin/v1/users/@bob:localhost/media";

    let (code, body) = call(&server, Method::GET, &format!("{list}?limit=2"), ALICE).await;
    assert_eq!(code, 200, "{body}");
    let newest: Vec<String> = uploaded.iter().rev().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids(&body), newest[..2]);
    assert_eq!(
        (body["total"].clone(), body["next_token"].clone()),
        (json!(5), json!(2))
    );
    let first = &body["media"][0];
    let mut fields: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_ts",
            "last_access_ts",
            "media_id",
            "media_length",
            "media_type",
            "quarantined_by",
            "safe_from_quarantine",
            "upload_name"
        ]
    );
    assert_eq!(first["media_length"], json!(400));
    assert_eq!(first["media_type"], json!("application/octet-stream"));
    assert_eq!(first["upload_name"], json!("f4.bin"));
    assert_eq!(first["quarantined_by"], Value::Null);
    assert_eq!(first["safe_from_quarantine"], json!(false));
    assert!(first["created_ts"].as_u64().unwrap() > 1_600_000_000_000);

    let (_, body) = call(
        &server,
        Method::GET,
        &format!("{list}?from=4&limit=2"),
        ALICE,
    )
    .await;
    assert_eq!(ids(&body), newest[4..]);
    assert!(body.get("next_token").is_none(), "last page: {body}");

    let (_, body) = call(
        &server,
        Method::GET,
        &format!("{list}?order_by=media_length"),
        ALICE,
    )
    .await;
    let lens: Vec<u64> = body["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["media_length"].as_u64().unwrap())
        .collect();
    assert_eq!(lens, [100, 200, 300, 400, 500]);
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("{list}?order_by=media_length&dir=b"),
        ALICE,
    )
    .await;
    assert_eq!(body["media"][0]["media_length"], json!(500));

    for bad in ["order_by=size", "dir=x", "limit=-1", "from=abc"] {
        let (code, body) = call(&server, Method::GET, &format!("{list}?{bad}"), ALICE).await;
        assert_eq!(
            (code, &body["errcode"]),
            (400, &json!("M_INVALID_PARAM")),
            "{bad}"
        );
    }
    let (code, body) = call(
        &server,
        Method::GET,
        "/_synapse/admin/v1/users/@bob:elsewhere.test/media",
        ALICE,
    )
    .await;
    assert_eq!(
        (code, &body["errcode"]),
        (400, &json!("M_INVALID_PARAM")),
        "a remote user"
    );
    let (code, _) = call(&server, Method::GET, list, BOB).await;
    assert_eq!(code, 403, "bob may not list even his own media here");

    // Delete the two largest.
    let (code, body) = call(
        &server,
        Method::DELETE,
        &format!("{list}?order_by=media_length&dir=b&limit=2"),
        ALICE,
    )
    .await;
    assert_eq!(code, 200);
    let largest: Vec<&str> = [2usize, 4]
        .iter()
        .map(|&i| uploaded[i].0.as_str())
        .collect();
    assert_eq!(body, json!({"deleted_media": largest, "total": 2}));
    for id in largest {
        assert_eq!(download_status(&server, id).await, 404);
    }
    let (_, body) = call(&server, Method::GET, list, ALICE).await;
    assert_eq!(body["total"], json!(3));
}

/// Deleting local media by age and size deletes what is older and larger, keeps protected and
/// quarantined media, and refuses `keep_profiles=true` (Synapse's default), since mxmedia cannot
/// tell avatars; timestamps in seconds and missing parameters are 400, as in Synapse.
#[actix_web::test]
async fn delete_by_age_and_size() {
    let server = TestServer::start_with(admin_alice).await;
    let small = upload_sized(&server, BOB, 100, 1, "small").await;
    let big = upload_sized(&server, BOB, 5000, 2, "big").await;
    let protected = upload_sized(&server, BOB, 5000, 3, "protected").await;
    let quarantined = upload_sized(&server, BOB, 5000, 4, "quarantined").await;
    call(
        &server,
        Method::POST,
        &format!("/_synapse/admin/v1/media/protect/{protected}"),
        ALICE,
    )
    .await;
    call(
        &server,
        Method::POST,
        &format!("/_synapse/admin/v1/media/quarantine/localhost/{quarantined}"),
        ALICE,
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1000;

    let path = format!("/_synapse/admin/v1/media/delete?before_ts={now}&size_gt=1000");
    let (code, body) = call(&server, Method::POST, &path, ALICE).await;
    assert_eq!(
        (code, &body["errcode"]),
        (400, &json!("M_INVALID_PARAM")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("keep_profiles=false")
    );
    assert_eq!(download_status(&server, &big).await, 200, "nothing deleted");

    for (query, errcode) in [
        ("keep_profiles=false", "M_MISSING_PARAM"),
        (
            "keep_profiles=false&before_ts=1700000000",
            "M_INVALID_PARAM",
        ),
        ("keep_profiles=false&before_ts=-5", "M_INVALID_PARAM"),
        (
            "keep_profiles=maybe&before_ts=1700000000000",
            "M_INVALID_PARAM",
        ),
    ] {
        let (code, body) = call(
            &server,
            Method::POST,
            &format!("/_synapse/admin/v1/media/delete?{query}"),
            ALICE,
        )
        .await;
        assert_eq!((code, &body["errcode"]), (400, &json!(errcode)), "{query}");
    }
    let (code, body) = call(
        &server,
        Method::POST,
        &format!(
            "/_synapse/admin/v1/media/elsewhere.test/delete?before_ts={now}&keep_profiles=false"
        ),
        ALICE,
    )
    .await;
    assert_eq!((code, &body["errcode"]), (400, &json!("M_INVALID_PARAM")));

    let (code, body) = call(
        &server,
        Method::POST,
        &format!("{path}&keep_profiles=false"),
        ALICE,
    )
    .await;
    assert_eq!(
        (code, body),
        (200, json!({"deleted_media": [big], "total": 1}))
    );
    assert_eq!(download_status(&server, &big).await, 404);
    assert_eq!(download_status(&server, &small).await, 200);
    assert_eq!(download_status(&server, &protected).await, 200);
    // The legacy path, everything older than now.
    let (code, body) = call(
        &server,
        Method::POST,
        &format!("/_synapse/admin/v1/media/localhost/delete?before_ts={now}&keep_profiles=false"),
        ALICE,
    )
    .await;
    assert_eq!(
        (code, body),
        (200, json!({"deleted_media": [small], "total": 1}))
    );
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("/_synapse/admin/v1/media/localhost/{quarantined}"),
        ALICE,
    )
    .await;
    assert_eq!(
        body["media_info"]["media_length"],
        json!(5000),
        "kept for review"
    );
}

/// Usage statistics per user, in Synapse's shape, ordered, filtered and paged.
#[actix_web::test]
async fn user_media_statistics() {
    let server = TestServer::start_with(admin_alice).await;
    upload_sized(&server, BOB, 100, 1, "a").await;
    upload_sized(&server, BOB, 200, 2, "b").await;
    upload_sized(&server, ALICE, 1000, 3, "c").await;
    let stats = "/_synapse/admin/v1/statistics/users/media";
    let (code, body) = call(&server, Method::GET, stats, ALICE).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"users": [
            {"displayname": "@alice:localhost", "media_count": 1, "media_length": 1000, "user_id": "@alice:localhost"},
            {"displayname": "@bob:localhost", "media_count": 2, "media_length": 300, "user_id": "@bob:localhost"},
        ], "total": 2})
    );
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("{stats}?order_by=media_count&dir=b&limit=1"),
        ALICE,
    )
    .await;
    assert_eq!(body["users"][0]["user_id"], json!("@bob:localhost"));
    assert_eq!(
        (body["next_token"].clone(), body["total"].clone()),
        (json!(1), json!(2))
    );
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("{stats}?search_term=ali"),
        ALICE,
    )
    .await;
    assert_eq!(body["total"], json!(1));
    let (_, body) = call(
        &server,
        Method::GET,
        &format!("{stats}?until_ts=1000"),
        ALICE,
    )
    .await;
    assert_eq!(body, json!({"users": [], "total": 0}));
    for bad in [
        "order_by=size",
        "from_ts=-1",
        "from_ts=5&until_ts=4",
        "search_term=",
    ] {
        let (code, body) = call(&server, Method::GET, &format!("{stats}?{bad}"), ALICE).await;
        assert_eq!(
            (code, &body["errcode"]),
            (400, &json!("M_INVALID_PARAM")),
            "{bad}"
        );
    }
}

/// The hash list: an admin adds bytes by hash (existing copies quarantined at once), shows and
/// removes them, exports the list as plain text and imports one; a malformed list is refused
/// whole.
#[actix_web::test]
async fn hash_list_add_remove_import_export() {
    use sha2::Digest as _;

    let server = TestServer::start_with(admin_alice).await;
    let bad = pseudo_random(3000, 5);
    let sha = hex::encode(sha2::Sha256::digest(&bad));
    let id = upload_as_bob(&server, &bad, "x").await;
    let hash = format!("/_mxmedia/admin/v1/quarantine/hash/{sha}");
    let (code, _) = call(&server, Method::POST, &hash, BOB).await;
    assert_eq!(code, 403);
    let (code, body) = call(&server, Method::POST, &hash, ALICE).await;
    assert_eq!(
        (code, body),
        (200, json!({"added": true, "quarantined_media": 1}))
    );
    assert_eq!(download_status(&server, &id).await, 404);
    let (code, body) = call(
        &server,
        Method::GET,
        &format!("/_mxmedia/admin/v1/quarantine/hash/{}", sha.to_uppercase()),
        ALICE,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["sha256"].clone(), body["quarantined_by"].clone()),
        (json!(sha), json!("@alice:localhost"))
    );
    let (code, body) = call(
        &server,
        Method::GET,
        "/_mxmedia/admin/v1/quarantine/hash/xyz",
        ALICE,
    )
    .await;
    assert_eq!((code, &body["errcode"]), (400, &json!("M_INVALID_PARAM")));

    let other = pseudo_random(3000, 6);
    let other_sha = hex::encode(sha2::Sha256::digest(&other));
    let hashes = server.url("/_mxmedia/admin/v1/quarantine/hashes");
    let import = |body: String| {
        let (client, url) = (server.client.clone(), hashes.clone());
        async move {
            let mut res = client
                .post(url)
                .bearer_auth(ALICE)
                .send_body(body)
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (code, body) = import(format!("# shared list\n{other_sha}\nnot-a-hash\n")).await;
    assert_eq!((code, &body["errcode"]), (400, &json!("M_INVALID_PARAM")));
    assert!(body["error"].as_str().unwrap().contains("Line 3"));
    let later = upload_as_bob(&server, &other, "y").await;
    assert_eq!(
        download_status(&server, &later).await,
        200,
        "a refused list adds nothing"
    );
    let (code, body) = import(format!(
        "# shared list\n\n{}\n{sha}\n",
        other_sha.to_uppercase()
    ))
    .await;
    assert_eq!(
        (code, body),
        (200, json!({"added": 1, "quarantined_media": 1}))
    );
    assert_eq!(download_status(&server, &later).await, 404);

    let mut res = server.get_as(&hashes, ALICE).await;
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    let mut expected = [sha.clone(), other_sha.clone()];
    expected.sort();
    assert_eq!(text, format!("{}\n", expected.join("\n")));

    let (code, body) = call(&server, Method::DELETE, &hash, ALICE).await;
    assert_eq!(
        (code, body),
        (200, json!({"removed": true, "released_media": 1}))
    );
    assert_eq!(download_status(&server, &id).await, 200);
    let (code, body) = call(&server, Method::GET, &hash, ALICE).await;
    assert_eq!((code, &body["errcode"]), (404, &json!("M_NOT_FOUND")));
}

/// A user's usage is counted as media comes and goes, and an admin's limits for them replace
/// the configured ones until reset.
#[actix_web::test]
async fn quota_usage_and_admin_overrides() {
    let server = TestServer::start_with(|c| {
        admin_alice(c);
        c.media.user_quota_bytes = bytesize::ByteSize::kib(64);
    })
    .await;
    let first = upload_sized(&server, BOB, 1000, 1, "a").await;
    upload_sized(&server, BOB, 500, 2, "b").await;
    let quota = "/_mxmedia/admin/v1/users/@bob:localhost/quota";
    let (code, body) = call(&server, Method::GET, quota, ALICE).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"user_id": "@bob:localhost", "max_bytes": 65536, "max_files": 0,
               "bytes": 1500, "files": 2, "override": null})
    );
    call(
        &server,
        Method::DELETE,
        &format!("/_synapse/admin/v1/media/localhost/{first}"),
        ALICE,
    )
    .await;
    let (_, body) = call(&server, Method::GET, quota, ALICE).await;
    assert_eq!(
        (body["bytes"].clone(), body["files"].clone()),
        (json!(500), json!(1))
    );

    let mut res = server
        .client
        .put(server.url(quota))
        .bearer_auth(ALICE)
        .send_json(&json!({"max_files": 3}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["max_bytes"].clone(), body["max_files"].clone()),
        (json!(65536), json!(3))
    );
    assert_eq!(body["override"], json!({"max_bytes": null, "max_files": 3}));
    let mut res = server
        .client
        .put(server.url(quota))
        .bearer_auth(ALICE)
        .send_body("not json")
        .await
        .unwrap();
    assert_error(&mut res, 400, "M_NOT_JSON").await;
    let (code, _) = call(&server, Method::GET, quota, BOB).await;
    assert_eq!(code, 403);
    let (_, body) = call(&server, Method::DELETE, quota, ALICE).await;
    assert_eq!(
        (body["max_files"].clone(), body["override"].clone()),
        (json!(0), Value::Null)
    );
}

/// Uploads `bytes` as `token`, with a `Content-Length` or (`chunked`) without one: the status
/// and the JSON body.
async fn try_upload(
    server: &TestServer,
    token: &str,
    bytes: Vec<u8>,
    chunked: bool,
) -> (u16, Value) {
    let request = server
        .client
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .insert_header(("content-type", "application/octet-stream"));
    let mut res = if chunked {
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
            .chunks(4096)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        request
            .send_stream(futures_util::stream::iter(pieces))
            .await
            .unwrap()
    } else {
        request.send_body(bytes).await.unwrap()
    };
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn usage(server: &TestServer, user: &str) -> (u64, u64) {
    let (_, body) = call(
        server,
        Method::GET,
        &format!("/_mxmedia/admin/v1/users/{user}/quota"),
        ALICE,
    )
    .await;
    (
        body["bytes"].as_u64().unwrap(),
        body["files"].as_u64().unwrap(),
    )
}

/// A full quota refuses an upload with 403 `M_USER_LIMIT_EXCEEDED` and an `info_uri`: a
/// declared length before the body is read, an undeclared one as it streams past the limit;
/// nothing of a refused upload is kept. A file-count quota counts files; an admin's override
/// lets a user past the default.
#[actix_web::test]
async fn quotas_refuse_uploads_that_do_not_fit() {
    let server = TestServer::start_with(|c| {
        admin_alice(c);
        c.media.user_quota_bytes = bytesize::ByteSize::kib(40);
        c.media.user_quota_files = 3;
        c.media.user_quota_info_uri = "https://example.org/quota".into();
    })
    .await;
    assert_eq!(
        try_upload(&server, BOB, pseudo_random(30_000, 1), false)
            .await
            .0,
        200
    );
    let (code, body) = try_upload(&server, BOB, pseudo_random(20_000, 2), false).await;
    assert_eq!(
        (code, &body["errcode"]),
        (403, &json!("M_USER_LIMIT_EXCEEDED")),
        "{body}"
    );
    assert_eq!(body["info_uri"], json!("https://example.org/quota"));
    assert!(
        body["error"].as_str().unwrap().contains("storage limit"),
        "{body}"
    );
    let (code, body) = try_upload(&server, BOB, pseudo_random(20_000, 3), true).await;
    assert_eq!(
        (code, &body["errcode"]),
        (403, &json!("M_USER_LIMIT_EXCEEDED")),
        "chunked: {body}"
    );
    assert_eq!(usage(&server, "@bob:localhost").await, (30_000, 1));
    assert_eq!(server.stored_files().1, 0, "no staging file left");
    // Alice has a quota of her own.
    assert_eq!(
        try_upload(&server, ALICE, pseudo_random(30_000, 4), true)
            .await
            .0,
        200
    );

    assert_eq!(
        try_upload(&server, BOB, pseudo_random(100, 5), false)
            .await
            .0,
        200
    );
    assert_eq!(
        try_upload(&server, BOB, pseudo_random(100, 6), true)
            .await
            .0,
        200
    );
    let (code, body) = try_upload(&server, BOB, pseudo_random(100, 7), false).await;
    assert_eq!(code, 403);
    assert!(
        body["error"].as_str().unwrap().contains("3 files"),
        "{body}"
    );

    let mut res = server
        .client
        .put(server.url("/_mxmedia/admin/v1/users/@bob:localhost/quota"))
        .bearer_auth(ALICE)
        .send_json(&json!({"max_bytes": 0, "max_files": 10}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.body().await);
    assert_eq!(
        try_upload(&server, BOB, pseudo_random(100_000, 8), false)
            .await
            .0,
        200
    );
}

/// Concurrent uploads never take a user past the quota together, declared or streamed: as many
/// fit as the quota holds, and no more.
#[actix_web::test]
async fn concurrent_uploads_never_overshoot_the_quota() {
    let server = TestServer::start_with(|c| {
        admin_alice(c);
        c.media.user_quota_bytes = bytesize::ByteSize::b(100_000);
    })
    .await;
    for (round, chunked) in [false, true].into_iter().enumerate() {
        let user_token = if chunked { ALICE } else { BOB };
        let results = futures_util::future::join_all((0..20u64).map(|i| {
            try_upload(
                &server,
                user_token,
                pseudo_random(10_000, 100 * round as u64 + i),
                chunked,
            )
        }))
        .await;
        let ok = results.iter().filter(|(code, _)| *code == 200).count();
        for (code, body) in &results {
            assert!(
                *code == 200 || body["errcode"] == "M_USER_LIMIT_EXCEEDED",
                "{code} {body}"
            );
        }
        let user = if chunked {
            "@alice:localhost"
        } else {
            "@bob:localhost"
        };
        let (bytes, files) = usage(&server, user).await;
        assert!(bytes <= 100_000, "chunked={chunked}: {bytes} bytes stored");
        assert_eq!((files, bytes), (ok as u64, ok as u64 * 10_000));
        if !chunked {
            assert_eq!(ok, 10, "declared lengths: exactly what fits");
        } else {
            assert!(ok >= 1, "chunked: some fit");
        }
    }
}

/// Uploads per user per minute are limited (429 `M_LIMIT_EXCEEDED` with `retry_after_ms`),
/// each user on their own budget.
#[actix_web::test]
async fn upload_rate_is_limited_per_user() {
    let server = TestServer::start_with(|c| c.media.user_upload_rate_per_minute = 3).await;
    for i in 0..3 {
        assert_eq!(
            try_upload(&server, BOB, pseudo_random(10, i), false)
                .await
                .0,
            200
        );
    }
    let (code, body) = try_upload(&server, BOB, pseudo_random(10, 9), false).await;
    assert_eq!((code, &body["errcode"]), (429, &json!("M_LIMIT_EXCEEDED")));
    assert!(body["retry_after_ms"].as_u64().unwrap() > 10_000, "{body}");
    assert_eq!(
        try_upload(&server, ALICE, pseudo_random(10, 10), false)
            .await
            .0,
        200
    );
}
