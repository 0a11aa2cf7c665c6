//! The doctor's upload round trip (with `--token`): a real image just over 1 MiB, the body
//! limit proxies apply by default (nginx's `client_max_body_size 1m`), uploaded through the
//! public URL, downloaded, thumbnailed, then removed through mxmedia's own listener (the
//! admin API is not routed through the proxy).

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{Check, Doctor, MAX_PROBE_BODY};

/// Width and height of the test image: its random pixels do not compress, so the PNG is
/// 640 × 560 × 3 bytes plus a little, just over 1 MiB.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 560;
/// The common proxy default the upload must get past.
const PROXY_DEFAULT_LIMIT: usize = 1024 * 1024;

/// Uploads, downloads, thumbnails and removes one test image.
pub async fn round_trip(doctor: &mut Doctor<'_>) {
    let ids = [
        ("upload", "upload through the public URL"),
        ("upload.download", "download"),
        ("upload.thumbnail", "thumbnail"),
        ("upload.delete", "removal of the test upload"),
    ];
    let skip_all = |doctor: &mut Doctor<'_>, why: &str| {
        for (id, title) in ids {
            doctor.push(Check::skip(id, title, why));
        }
    };
    let Some(token) = doctor.options.token.clone() else {
        skip_all(
            doctor,
            "pass --token TOKEN (any user's access token) to run it",
        );
        return;
    };
    let Some(base) = doctor.base_url.clone() else {
        skip_all(doctor, "no public client URL");
        return;
    };
    let image = match test_image() {
        Ok(image) => Bytes::from(image),
        Err(e) => {
            doctor.push(Check::fail(
                "upload",
                ids[0].1,
                format!("could not make the test image: {e}"),
                "report this as a bug",
            ));
            return;
        }
    };
    let Some((server, media_id)) = upload(doctor, &base, &token, image.clone()).await else {
        for &(id, title) in ids.iter().skip(1) {
            doctor.push(Check::skip(id, title, "nothing was uploaded"));
        }
        return;
    };
    download(doctor, &base, &token, &server, &media_id, &image).await;
    thumbnail(doctor, &base, &token, &server, &media_id).await;
    delete(doctor, &token, &server, &media_id).await;
}

async fn upload(
    doctor: &mut Doctor<'_>,
    base: &str,
    token: &str,
    image: Bytes,
) -> Option<(String, String)> {
    let (id, title) = ("upload", "upload through the public URL");
    let url = format!("{base}/_matrix/media/v3/upload?filename=mxmedia-doctor.png");
    let len = image.len();
    let request = doctor
        .client
        .post(&url)
        .bearer_auth(token)
        .insert_header(("content-type", "image/png"));
    let answer = match doctor.send(request, Some(image), MAX_PROBE_BODY).await {
        Ok(answer) => answer,
        Err(e) => {
            doctor.push(Check::fail(
                id,
                title,
                format!("no answer: {e}"),
                "check the proxy's error log",
            ));
            return None;
        }
    };
    let uri = answer
        .json()
        .and_then(|j| j.get("content_uri")?.as_str().map(str::to_owned));
    match (answer.status, uri) {
        (200, Some(uri)) => {
            let Some((server, media_id)) = uri
                .strip_prefix("mxc://")
                .and_then(|rest| rest.split_once('/'))
                .map(|(s, m)| (s.to_owned(), m.to_owned()))
            else {
                doctor.push(Check::fail(
                    id,
                    title,
                    format!("the answer names {uri:?}, not an mxc URI"),
                    "route /_matrix/media/v3/upload to mxmedia",
                ));
                return None;
            };
            doctor.push(Check::pass(
                id,
                title,
                format!("{len} bytes stored as {uri}"),
            ));
            Some((server, media_id))
        }
        (413, _) if answer.echo.is_some() || answer.errcode().is_some() => {
            doctor.push(Check::fail(
                id,
                title,
                format!(
                    "mxmedia refuses {len} bytes ({}): its own upload limit is below that",
                    answer.describe()
                ),
                "raise MXMEDIA_MEDIA__MAX_UPLOAD_SIZE (media.max_upload_size)",
            ));
            None
        }
        (413, _) => {
            doctor.push(Check::fail(
                id,
                title,
                format!(
                    "the proxy caps upload size: {len} bytes got {} instead of reaching mxmedia \
                     (clients see no Matrix error)",
                    answer.describe()
                ),
                format!(
                    "nginx: `client_max_body_size 0;` in the media location (mxmedia enforces \
                     media.max_upload_size = {} itself); Caddy: drop `request_body {{ max_size … }}` \
                     from the media route or raise it above that",
                    doctor.config.media.max_upload_size
                ),
            ));
            None
        }
        (401, _) => {
            doctor.push(Check::fail(
                id,
                title,
                format!("the token is refused ({})", answer.describe()),
                "pass a current access token of a user on this homeserver with --token",
            ));
            None
        }
        _ => {
            doctor.push(Check::fail(
                id,
                title,
                format!("{url} answered {}", answer.describe()),
                "route /_matrix/media/v3/upload to mxmedia (see route /_matrix/media/v3/ above)",
            ));
            None
        }
    }
}

async fn download(
    doctor: &mut Doctor<'_>,
    base: &str,
    token: &str,
    server: &str,
    media_id: &str,
    image: &[u8],
) {
    let (id, title) = ("upload.download", "download");
    let url = format!("{base}/_matrix/client/v1/media/download/{server}/{media_id}");
    let request = doctor.client.get(&url).bearer_auth(token);
    match doctor.send(request, None, image.len() + 1).await {
        Ok(answer)
            if answer.status == 200
                && Sha256::digest(&answer.body) == Sha256::digest(image) =>
        {
            doctor.push(Check::pass(
                id,
                title,
                format!("{} bytes back, identical", answer.body.len()),
            ));
        }
        Ok(answer) if answer.status == 200 => doctor.push(Check::fail(
            id,
            title,
            format!(
                "{} bytes back, not the bytes uploaded",
                answer.body.len()
            ),
            "the proxy rewrites bodies: turn off any filter (gzip, sub_filter) on the media location",
        )),
        Ok(answer) => doctor.push(Check::fail(
            id,
            title,
            format!("{url} answered {}", answer.describe()),
            "route /_matrix/client/v1/media/ to mxmedia",
        )),
        Err(e) => doctor.push(Check::fail(
            id,
            title,
            format!("no answer: {e}"),
            "check the proxy's error log",
        )),
    }
}

async fn thumbnail(doctor: &mut Doctor<'_>, base: &str, token: &str, server: &str, media_id: &str) {
    let (id, title) = ("upload.thumbnail", "thumbnail");
    let url = format!(
        "{base}/_matrix/client/v1/media/thumbnail/{server}/{media_id}?width=32&height=32&method=scale"
    );
    let request = doctor.client.get(&url).bearer_auth(token);
    match doctor.send(request, None, 4 * 1024 * 1024).await {
        Ok(answer) if answer.status == 200 && answer.content_type().starts_with("image/") => {
            doctor.push(Check::pass(
                id,
                title,
                format!("{} ({} bytes)", answer.content_type(), answer.body.len()),
            ));
        }
        Ok(answer) => doctor.push(Check::fail(
            id,
            title,
            format!("{url} answered {}", answer.describe()),
            "see the server log (journalctl -u mxmedia) for the thumbnailer's error",
        )),
        Err(e) => doctor.push(Check::fail(
            id,
            title,
            format!("no answer: {e}"),
            "check the proxy's error log",
        )),
    }
}

async fn delete(doctor: &mut Doctor<'_>, token: &str, server: &str, media_id: &str) {
    let (id, title) = ("upload.delete", "removal of the test upload");
    let mut listen = doctor.config.listen;
    // A wildcard listener is reached on loopback.
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if doctor.config.tls.paths().is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{listen}/_mxmedia/admin/v1/media/{server}/{media_id}");
    let mxc = format!("mxc://{server}/{media_id}");
    // Our own listener's certificate is trusted as federation trusts certificates.
    let tls = crate::net::tls::client_config(
        doctor.config.federation.verify_tls,
        doctor.config.federation.ca_file.as_deref(),
    )
    .map(std::sync::Arc::new);
    let client = match tls {
        Ok(tls) => super::homeserver_client(tls),
        Err(_) => doctor.homeserver.clone(),
    };
    let sent = client.delete(&url).bearer_auth(token).send().await;
    match sent {
        Ok(response) if response.status().is_success() => {
            doctor.push(Check::pass(id, title, format!("{mxc} removed")));
        }
        Ok(response) if response.status().as_u16() == 403 => doctor.push(Check::warn(
            id,
            title,
            format!("{mxc} stays: the token's user is not a media admin"),
            "pass the token of a user listed in MXMEDIA_AUTH__ADMINS (auth.admins), or remove it \
             with such a token: DELETE /_mxmedia/admin/v1/media/SERVER/ID",
        )),
        Ok(response) => doctor.push(Check::warn(
            id,
            title,
            format!("{mxc} stays: {url} answered HTTP {}", response.status()),
            "remove it with an admin's token: DELETE /_mxmedia/admin/v1/media/SERVER/ID",
        )),
        Err(e) => doctor.push(Check::warn(
            id,
            title,
            format!("{mxc} stays: {url}: {e}"),
            "run doctor on the host mxmedia listens on (MXMEDIA_LISTEN)",
        )),
    }
}

/// A PNG of random pixels, just over `PROXY_DEFAULT_LIMIT` bytes.
fn test_image() -> Result<Vec<u8>, png::EncodingError> {
    let pixels = usize::try_from(WIDTH * HEIGHT * 3).unwrap_or(0);
    let mut state = rand::random::<u64>() | 1;
    let data: Vec<u8> = (0..pixels)
        .map(|_| {
            // xorshift64: noise, so the image does not compress below the limit.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let mut out = Vec::with_capacity(pixels + 4096);
    {
        let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&data)?;
    }
    debug_assert!(out.len() > PROXY_DEFAULT_LIMIT);
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The test image is a valid PNG just over the 1 MiB proxies allow by default.
    #[test]
    fn test_image_is_just_over_one_mebibyte() {
        let image = super::test_image().unwrap();
        assert!(image.len() > 1024 * 1024, "{}", image.len());
        assert!(image.len() < 1024 * 1024 + 64 * 1024, "{}", image.len());
        assert!(image.starts_with(b"\x89PNG"));
    }
}
