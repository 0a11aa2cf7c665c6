//! Prometheus metrics, served on their own listener (`MXMEDIA_METRICS__LISTEN`) so they are
//! never public by accident. Metric names are listed in the README.

use std::{net::SocketAddr, sync::OnceLock};

use actix_web::{App, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: from a cached download to a slow remote fetch.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Starts the metrics listener on the current actix system.
pub fn serve(addr: SocketAddr) -> anyhow::Result<actix_web::dev::ServerHandle> {
    let Some(handle) = handle() else {
        anyhow::bail!("metrics recorder unavailable");
    };
    let server = HttpServer::new(move || {
        App::new().route(
            "/metrics",
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .content_type("text/plain; version=0.0.4")
                    .body(handle.render())
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?
    .run();
    let server_handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(%addr, "metrics listening");
    Ok(server_handle)
}

/// A bounded label for a request path: the endpoint it reached, not the path itself.
pub fn endpoint(path: &str) -> &'static str {
    let rest = path
        .strip_prefix("/_matrix/client/v1/media/")
        .or_else(|| path.strip_prefix("/_matrix/client/unstable/org.matrix.msc3916/media/"))
        .or_else(|| {
            [
                "/_matrix/media/v3/",
                "/_matrix/media/r0/",
                "/_matrix/media/v1/",
            ]
            .iter()
            .find_map(|p| path.strip_prefix(p))
        });
    if let Some(rest) = rest {
        return match rest.split('/').next().unwrap_or("") {
            "download" => "download",
            "thumbnail" => "thumbnail",
            "upload" => "upload",
            "create" => "create",
            "config" => "config",
            "preview_url" => "preview_url",
            _ => "other",
        };
    }
    if let Some(rest) = path.strip_prefix("/_matrix/federation/v1/media/") {
        return if rest.starts_with("thumbnail") {
            "federation_thumbnail"
        } else {
            "federation_download"
        };
    }
    match path {
        "/_mxmedia/health" => "health",
        "/_matrix/key/v2/server" => "server_keys",
        _ => "other",
    }
}

/// Static label values keep the per-request metrics free of allocations.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "OPTIONS" => "OPTIONS",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

pub fn status_label(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (204, "204"),
        (206, "206"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (416, "416"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (504, "504"),
        (507, "507"),
    ];
    KNOWN
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoint_labels_are_bounded() {
        assert_eq!(
            endpoint("/_matrix/client/v1/media/download/a/b"),
            "download"
        );
        assert_eq!(endpoint("/_matrix/media/v3/upload"), "upload");
        assert_eq!(endpoint("/_matrix/media/r0/download/x/y/z"), "download");
        assert_eq!(endpoint("/_matrix/media/v1/create"), "create");
        assert_eq!(
            endpoint("/_matrix/federation/v1/media/thumbnail/x"),
            "federation_thumbnail"
        );
        assert_eq!(endpoint("/random/attacker/path/123"), "other");
    }
}
