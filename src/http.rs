//! The route table, CORS, and the Matrix answers for unknown routes and wrong methods.
//!
//! One line per endpoint. Deprecated and unstable prefixes that clients still use map onto the
//! same handlers. Everything not listed answers 404 `M_UNRECOGNIZED`; a listed path with a method
//! it does not take answers 405 `M_UNRECOGNIZED`, as the spec requires.

pub mod admin;
pub mod client;
pub mod doctor;
pub mod extract;
pub mod federation;
pub mod preview;
pub mod response;
pub mod synapse_admin;
pub mod thumbnail;
pub mod upload;

use actix_web::{
    HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web::{self, ServiceConfig},
};

use crate::error::Error;

/// Prefixes of the authenticated client media API (v1.11) and its MSC3916 unstable twin.
const CLIENT_MEDIA: &[&str] = &[
    "/_matrix/client/v1/media",
    "/_matrix/client/unstable/org.matrix.msc3916/media",
];
/// Prefixes of the media API under `/_matrix/media`: upload lives here, the rest is deprecated.
const LEGACY_MEDIA: &[&str] = &[
    "/_matrix/media/v3",
    "/_matrix/media/r0",
    "/_matrix/media/v1",
];

pub fn configure(cfg: &mut ServiceConfig) {
    // Scopes keep routing cheap: a request is matched against the few resources under its
    // prefix instead of every pattern in the table.
    cfg.app_data(extract::query_config())
        .service(resource("/_mxmedia/health").route(web::get().to(client::health)));
    for prefix in CLIENT_MEDIA {
        cfg.service(
            scope(prefix)
                .service(media_scope("/download", client::get_content))
                .service(media_scope("/thumbnail", thumbnail::get_content_thumbnail))
                .service(resource("/config").route(web::get().to(client::get_media_config)))
                .service(resource("/preview_url").route(web::get().to(preview::preview_url))),
        );
    }
    for prefix in LEGACY_MEDIA {
        let mut legacy = scope(prefix)
            .service(media_scope("/download", client::get_content_legacy))
            .service(media_scope(
                "/thumbnail",
                thumbnail::get_content_thumbnail_legacy,
            ))
            .service(resource("/upload").route(web::post().to(upload::create_content)))
            .service(
                resource("/upload/{server_name}/{media_id}")
                    .route(web::put().to(upload::upload_content)),
            )
            .service(resource("/config").route(web::get().to(client::get_media_config)))
            .service(resource("/preview_url").route(web::get().to(preview::preview_url)));
        if *prefix == "/_matrix/media/v1" {
            legacy =
                legacy.service(resource("/create").route(web::post().to(upload::create_mxc_uri)));
        }
        cfg.service(legacy);
    }
    cfg.service(
        scope("/_matrix/federation/v1/media")
            .service(resource("/download/{media_id}").route(web::get().to(federation::get_content)))
            .service(
                resource("/thumbnail/{media_id}")
                    .route(web::get().to(federation::get_content_thumbnail)),
            ),
    )
    .service(resource("/_matrix/key/v2/server").route(web::get().to(federation::server_keys)));
    cfg.service(
        scope("/_mxmedia/admin/v1")
            .service(
                resource("/media/{server_name}/{media_id}")
                    .route(web::delete().to(admin::delete_media)),
            )
            .service(
                resource("/quarantine/hash/{sha256}")
                    .route(web::post().to(admin::add_hash))
                    .route(web::get().to(admin::get_hash))
                    .route(web::delete().to(admin::remove_hash)),
            )
            .service(
                resource("/quarantine/hashes")
                    .route(web::get().to(admin::export_hashes))
                    .route(web::post().to(admin::import_hashes)),
            )
            .service(
                resource("/users/{user_id}/quota")
                    .route(web::get().to(admin::get_quota))
                    .route(web::put().to(admin::set_quota))
                    .route(web::delete().to(admin::reset_quota)),
            ),
    );
    synapse_admin_routes(cfg);
    cfg.service(
        resource("/_matrix/media/unstable/org.matrix.msc4034/usage")
            .route(web::get().to(client::get_media_usage)),
    );
    cfg.service(
        scope("/_matrix/media/unstable/fi.mau.msc2246")
            .service(resource("/create").route(web::post().to(upload::create_mxc_uri)))
            .service(
                resource("/upload/{server_name}/{media_id}")
                    .route(web::put().to(upload::upload_content)),
            ),
    );
}

/// Synapse's admin media API. Fixed paths come before the `{serverName}/{mediaId}` pattern
/// they would otherwise match (`protect/{mediaId}`, `{serverName}/delete`), as in Synapse.
fn synapse_admin_routes(cfg: &mut ServiceConfig) {
    use synapse_admin as sa;
    cfg.service(
        scope("/_synapse/admin/v1")
            .service(
                scope("/media")
                    .service(
                        resource("/quarantine/{server_name}/{media_id}")
                            .route(web::post().to(sa::quarantine_media)),
                    )
                    .service(
                        resource("/unquarantine/{server_name}/{media_id}")
                            .route(web::post().to(sa::unquarantine_media)),
                    )
                    .service(
                        resource("/protect/{media_id}").route(web::post().to(sa::protect_media)),
                    )
                    .service(
                        resource("/unprotect/{media_id}")
                            .route(web::post().to(sa::unprotect_media)),
                    )
                    .service(resource("/delete").route(web::post().to(sa::delete_old_media)))
                    .service(
                        resource("/{server_name}/delete")
                            .route(web::post().to(sa::delete_old_media_legacy)),
                    )
                    .service(
                        resource("/{server_name}/{media_id}")
                            .route(web::get().to(sa::media_info))
                            .route(web::delete().to(sa::delete_media)),
                    ),
            )
            .service(resource("/purge_media_cache").route(web::post().to(sa::purge_media_cache)))
            .service(
                resource("/statistics/users/media").route(web::get().to(sa::user_media_statistics)),
            )
            .service(
                resource("/user/{user_id}/media/quarantine")
                    .route(web::post().to(sa::quarantine_user_media)),
            )
            .service(
                resource("/users/{user_id}/media")
                    .route(web::get().to(sa::list_user_media))
                    .route(web::delete().to(sa::delete_user_media)),
            )
            .service(
                resource("/room/{room_id}/media/quarantine")
                    .route(web::post().to(sa::quarantine_room_media)),
            )
            .service(
                resource("/quarantine_media/{room_id}")
                    .route(web::post().to(sa::quarantine_room_media)),
            ),
    );
}

fn scope(prefix: &str) -> actix_web::Scope {
    web::scope(prefix).default_service(web::to(unrecognized))
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// A media scope (`/download`, `/thumbnail`): `MediaPath` parses the rest of the path and
/// checks the method, so these hot routes skip the router's pattern matching.
fn media_scope<F, Args>(name: &str, handler: F) -> actix_web::Scope
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::scope(name).default_service(web::to(handler))
}

async fn method_not_allowed() -> Result<HttpResponse, Error> {
    Err(Error::MethodNotAllowed)
}

pub async fn unrecognized() -> Result<HttpResponse, Error> {
    Err(Error::Unrecognized)
}

const CORS_HEADERS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    ),
    (
        "access-control-allow-headers",
        "X-Requested-With, Content-Type, Authorization, Date",
    ),
];

/// CORS on every response, and `OPTIONS` answered here without running any endpoint logic.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.method() == Method::OPTIONS {
        let mut response = HttpResponse::NoContent();
        for header in CORS_HEADERS {
            response.insert_header(header);
        }
        return Ok(req.into_response(response.finish()));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    let headers = res.headers_mut();
    for (name, value) in CORS_HEADERS {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    Ok(res)
}

/// One line per request: method, path (never the query, which may hold an access token),
/// status, response size and duration.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let res = next.call(req).await?;
    let bytes = match res.response().body().size() {
        _ if method == actix_web::http::Method::HEAD => 0,
        actix_web::body::BodySize::Sized(n) => n,
        actix_web::body::BodySize::None | actix_web::body::BodySize::Stream => 0,
    };
    let endpoint = crate::metrics::endpoint(&path);
    let status = res.status().as_u16();
    let labels = [
        ("endpoint", endpoint),
        ("method", crate::metrics::method_label(&method)),
        ("status", crate::metrics::status_label(status)),
    ];
    metrics::counter!("mxmedia_http_requests_total", &labels).increment(1);
    metrics::histogram!("mxmedia_http_request_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("mxmedia_http_response_bytes_total", "endpoint" => endpoint).increment(bytes);
    tracing::info!(
        target: "mxmedia::access",
        %method,
        path,
        status,
        bytes,
        ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(res)
}
