//! Doctor checks of the way in: where clients and remote servers find us, and whether each
//! media prefix reaches this mxmedia with the headers it needs.
//!
//! Clients find the public URL in `https://SERVER_NAME/.well-known/matrix/client`
//! (<https://spec.matrix.org/v1.16/client-server-api/#well-known-uris>), remote servers the
//! federation address by server discovery
//! (<https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names>), here the very
//! code mxmedia's federation client uses. A request to each prefix carries the doctor nonce;
//! only an answer with the nonce's echo came from this mxmedia.

use super::{Answer, Check, Doctor, MAX_PROBE_BODY, nonce::Echo};

/// The client media prefixes, each with the alternative naming it in the README's nginx
/// `location` regex, probed at `{prefix}/config`.
pub const CLIENT_PREFIXES: &[(&str, &str, &str)] = &[
    (
        "route.client_v1",
        "/_matrix/client/v1/media",
        "client/v1/media/",
    ),
    (
        "route.client_msc3916",
        "/_matrix/client/unstable/org.matrix.msc3916/media",
        r"client/unstable/org\.matrix\.msc3916/media/",
    ),
    ("route.media_v3", "/_matrix/media/v3", "media/"),
    ("route.media_r0", "/_matrix/media/r0", "media/"),
];
pub const FEDERATION_PREFIX: &str = "/_matrix/federation/v1/media";
/// The nginx `location` of the README (assets/nginx-media.conf.template), shortened.
const NGINX_LOCATION: &str = r"location ~ ^/_matrix/(media/|client/v1/media/|client/unstable/org\.matrix\.msc3916/media/|federation/v1/media/)";

/// Finds the public client URL and the federation address, and checks that the address is a
/// federation listener.
pub async fn discover(doctor: &mut Doctor<'_>) {
    client_url(doctor).await;
    federation_address(doctor).await;
}

async fn client_url(doctor: &mut Doctor<'_>) {
    let title = "public client URL";
    let server_name = doctor.config.server_name.clone();
    if let Some(base) = &doctor.options.base_url {
        let base = base.trim_end_matches('/').to_owned();
        doctor.push(Check::pass(
            "discovery.client",
            title,
            format!("{base} (--base-url)"),
        ));
        doctor.base_url = Some(base);
        return;
    }
    let url = format!("https://{server_name}/.well-known/matrix/client");
    let fallback = format!("https://{server_name}");
    let answer = doctor
        .send(doctor.client.get(&url), None, MAX_PROBE_BODY)
        .await;
    let fix = format!(
        "serve {url} as {{\"m.homeserver\": {{\"base_url\": \"https://…\"}}}} (nginx: `location = \
         /.well-known/matrix/client {{ return 200 '…'; }}`), or pass --base-url"
    );
    match answer {
        Ok(answer) if answer.status == 200 => {
            let base = answer
                .json()
                .and_then(|j| {
                    j.get("m.homeserver")?
                        .get("base_url")?
                        .as_str()
                        .map(str::to_owned)
                })
                .filter(|b| url::Url::parse(b).is_ok());
            match base {
                Some(base) => {
                    let base = base.trim_end_matches('/').to_owned();
                    doctor.push(Check::pass(
                        "discovery.client",
                        title,
                        format!("{base} (from {url})"),
                    ));
                    doctor.base_url = Some(base);
                }
                None => {
                    doctor.push(Check::fail(
                        "discovery.client",
                        title,
                        format!("{url} has no valid m.homeserver.base_url; clients give up"),
                        fix,
                    ));
                    doctor.base_url = Some(fallback);
                }
            }
        }
        // The spec's "IGNORE": clients then use the server name itself.
        Ok(answer) if answer.status == 404 => {
            doctor.push(Check::pass(
                "discovery.client",
                title,
                format!("{fallback} (no {url}: clients use the server name)"),
            ));
            doctor.base_url = Some(fallback);
        }
        Ok(answer) => {
            doctor.push(Check::fail(
                "discovery.client",
                title,
                format!("{url} answered {}; clients give up", answer.describe()),
                fix,
            ));
            doctor.base_url = Some(fallback);
        }
        Err(e) => {
            doctor.push(Check::fail(
                "discovery.client",
                title,
                format!("no answer: {e}"),
                format!(
                    "make https://{server_name} reachable from here (DNS, firewall, the proxy's \
                     certificate), or pass --base-url"
                ),
            ));
        }
    }
}

async fn federation_address(doctor: &mut Doctor<'_>) {
    let title = "federation address";
    let id = "discovery.federation";
    let server = doctor.config.server_name.clone();
    let fix = if server.ip().is_some() || server.port().is_some() {
        format!(
            "remote servers connect to {server} itself (no delegation for a server name with an \
             IP or a port): serve the homeserver's federation API there, through the proxy"
        )
    } else {
        format!(
            "point https://{}/.well-known/matrix/server ({{\"m.server\": \"host:port\"}}) or \
             the SRV record _matrix-fed._tcp.{} at the proxy in front of the homeserver's \
             federation listener",
            server.host(),
            server.host()
        )
    };
    let destination = match doctor.federation.destination(&doctor.client, &server).await {
        Ok(destination) => destination,
        Err(e) => {
            doctor.push(Check::fail(
                id,
                title,
                format!("server discovery for {server} failed: {e}"),
                fix,
            ));
            return;
        }
    };
    let shown = format!("{}:{}", destination.host, destination.port);
    let version = destination.url("/_matrix/federation/v1/version");
    let request = doctor
        .client
        .get(&version)
        .insert_header(("host", destination.host_header.as_str()));
    match doctor.send(request, None, MAX_PROBE_BODY).await {
        Ok(answer)
            if answer.status == 200 && answer.json().is_some_and(|j| j.get("server").is_some()) =>
        {
            doctor.push(Check::pass(
                id,
                title,
                format!("{server} is served at {shown}, a federation listener"),
            ));
        }
        Ok(answer) => doctor.push(Check::fail(
            id,
            title,
            format!(
                "discovery leads to {shown}, whose /_matrix/federation/v1/version answered {}",
                answer.describe()
            ),
            fix,
        )),
        Err(e) => doctor.push(Check::fail(
            id,
            title,
            format!("discovery leads to {shown}, which does not answer: {e}"),
            fix,
        )),
    }
    doctor.destination = Some(destination);
}

/// Each media prefix, sent to the public URL (federation: the federation address), must be
/// answered by this mxmedia; then the headers it saw must be the ones it needs.
pub async fn media_routes(doctor: &mut Doctor<'_>) {
    let listen = doctor.config.listen;
    let mut echoes: Vec<(String, Echo)> = Vec::new();
    for &(id, prefix, alternative) in CLIENT_PREFIXES {
        let title = format!("route {prefix}/");
        let Some(base) = doctor.base_url.clone() else {
            doctor.push(Check::skip(id, title, "no public client URL"));
            continue;
        };
        let url = format!("{base}{prefix}/config");
        let fix = format!(
            "route {prefix}/ to mxmedia ({listen}): nginx: `{alternative}` in `{NGINX_LOCATION}` \
             {{ proxy_pass http://{listen}; }}` (assets/nginx-media.conf.template); Caddy: the \
             same regex in `@media path_regexp`"
        );
        let answer = doctor
            .send(doctor.client.get(&url), None, MAX_PROBE_BODY)
            .await;
        if let Some(echo) = route_check(doctor, id, title, &url, answer, fix) {
            echoes.push((base.clone(), echo));
        }
    }
    let title = format!("route {FEDERATION_PREFIX}/");
    let id = "route.federation_v1";
    match doctor.destination.clone() {
        None => doctor.push(Check::skip(id, title, "no federation address")),
        Some(destination) => {
            let path = format!(
                "{FEDERATION_PREFIX}/download/{}",
                mxmedia_proto::MediaId::generate().as_str()
            );
            let url = destination.url(&path);
            let request = doctor
                .client
                .get(&url)
                .insert_header(("host", destination.host_header.as_str()));
            let answer = doctor.send(request, None, MAX_PROBE_BODY).await;
            let fix = format!(
                "route {FEDERATION_PREFIX}/ to mxmedia ({listen}) in the server block of the \
                 federation address {}:{}: nginx: `federation/v1/media/` in `{NGINX_LOCATION}` \
                 {{ proxy_pass http://{listen}; }}`",
                destination.host, destination.port
            );
            if let Some(echo) = route_check(doctor, id, title, &url, answer, fix) {
                echoes.push((format!("https://{}", destination.host_header), echo));
            }
        }
    }
    headers_check(doctor, &echoes);
}

/// Reports one probe; returns the echo when this mxmedia answered.
fn route_check(
    doctor: &mut Doctor<'_>,
    id: &'static str,
    title: String,
    url: &str,
    answer: Result<Answer, String>,
    fix: String,
) -> Option<Echo> {
    if doctor.nonce.is_none() {
        doctor.push(Check::skip(
            id,
            title,
            "no doctor nonce in the data dir: cannot tell mxmedia's answers from others",
        ));
        return None;
    }
    match answer {
        Ok(answer) => match answer.echo.clone() {
            Some(echo) => {
                doctor.push(Check::pass(
                    id,
                    title,
                    format!("answered by this mxmedia ({})", answer.describe()),
                ));
                Some(echo)
            }
            None => {
                let who = if answer.errcode().is_some() {
                    "by the homeserver or another Matrix server, not this mxmedia"
                } else {
                    "by the proxy itself, not this mxmedia"
                };
                doctor.push(Check::fail(
                    id,
                    title,
                    format!("{url} was answered {who} ({})", answer.describe()),
                    fix,
                ));
                None
            }
        },
        Err(e) => {
            doctor.push(Check::fail(id, title, format!("no answer: {e}"), fix));
            None
        }
    }
}

/// mxmedia must see the public `Host` (not its own address, which a proxy sends by default)
/// and the client's address and scheme.
fn headers_check(doctor: &mut Doctor<'_>, echoes: &[(String, Echo)]) {
    let id = "route.headers";
    let title = "proxy headers";
    if echoes.is_empty() {
        doctor.push(Check::skip(id, title, "no request reached mxmedia"));
        return;
    }
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (public, echo) in echoes {
        let Ok(public) = url::Url::parse(public) else {
            continue;
        };
        if !host_matches(&public, echo.host.as_deref()) {
            problems.push(format!(
                "mxmedia saw Host {} for {}",
                echo.host.as_deref().unwrap_or("(none)"),
                public.host_str().unwrap_or_default()
            ));
            fixes.push("`proxy_set_header Host $host;` in the media location (Caddy passes it)");
        }
        if echo.forwarded_for.is_none() {
            problems.push("no X-Forwarded-For".to_owned());
            fixes.push("`proxy_set_header X-Forwarded-For $remote_addr;`");
        }
        if echo.forwarded_proto.as_deref() != Some(public.scheme()) {
            problems.push(format!(
                "X-Forwarded-Proto {} for {}",
                echo.forwarded_proto.as_deref().unwrap_or("(none)"),
                public.scheme()
            ));
            fixes.push("`proxy_set_header X-Forwarded-Proto $scheme;`");
        }
    }
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    let mut seen = std::collections::HashSet::new();
    fixes.retain(|f| seen.insert(*f));
    if problems.is_empty() {
        doctor.push(Check::pass(
            id,
            title,
            "mxmedia sees the public Host, X-Forwarded-For and X-Forwarded-Proto",
        ));
    } else {
        doctor.push(Check::fail(
            id,
            title,
            problems.join("; "),
            format!("nginx: {}", fixes.join(" and ")),
        ));
    }
}

/// The host mxmedia saw is the public one: same name, and the public port or none (nginx's
/// `$host` drops the port; its default, the upstream's address, keeps mxmedia's own).
fn host_matches(public: &url::Url, seen: Option<&str>) -> bool {
    let Some(seen) = seen else {
        return false;
    };
    let Ok(seen) = url::Url::parse(&format!("{}://{seen}", public.scheme())) else {
        return false;
    };
    let same_name = seen
        .host_str()
        .zip(public.host_str())
        .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b));
    same_name
        && (seen.port().is_none() || seen.port_or_known_default() == public.port_or_known_default())
}

#[cfg(test)]
mod tests {
    use super::host_matches;

    /// The Host a proxy forwards counts as the public one with or without the port, never
    /// when it is the upstream's address.
    #[test]
    fn host_must_be_the_public_name() {
        let public = url::Url::parse("https://matrix.example.org:8448").unwrap();
        assert!(host_matches(&public, Some("matrix.example.org")));
        assert!(host_matches(&public, Some("Matrix.Example.org:8448")));
        assert!(!host_matches(&public, Some("127.0.0.1:8090")));
        assert!(!host_matches(&public, Some("matrix.example.org:8090")));
        assert!(!host_matches(&public, None));
        let ip = url::Url::parse("https://127.0.0.11:8448").unwrap();
        assert!(host_matches(&ip, Some("127.0.0.11")));
        assert!(!host_matches(&ip, Some("127.0.0.11:8090")));
    }
}
