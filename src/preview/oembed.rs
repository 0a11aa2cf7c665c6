//! oEmbed: the JSON some sites offer instead of (or besides) OpenGraph tags.
//!
//! Pages advertise their endpoint with `<link rel="alternate" type="application/json+oembed">`;
//! for a few big providers whose pages are huge or need JavaScript (YouTube, Twitter/X, Vimeo,
//! Spotify) the endpoint is known from the URL, so the page is never fetched. Either way the
//! endpoint is fetched through the same guard as everything else.

use serde_json::{Map, Value};
use url::Url;

/// Largest oEmbed answer read.
pub const MAX_OEMBED_BYTES: usize = 256 * 1024;

/// Providers whose endpoint is known: (hosts, path prefixes matched, endpoint).
const PROVIDERS: &[(&[&str], &[&str], &str)] = &[
    (
        &["youtube.com", "www.youtube.com", "m.youtube.com"],
        &["/watch", "/shorts/", "/live/"],
        "https://www.youtube.com/oembed",
    ),
    (&["youtu.be"], &["/"], "https://www.youtube.com/oembed"),
    (
        &[
            "twitter.com",
            "www.twitter.com",
            "mobile.twitter.com",
            "x.com",
            "www.x.com",
        ],
        &["/"],
        "https://publish.twitter.com/oembed",
    ),
    (
        &["vimeo.com", "www.vimeo.com"],
        &["/"],
        "https://vimeo.com/api/oembed.json",
    ),
    (
        &["open.spotify.com"],
        &["/"],
        "https://open.spotify.com/oembed",
    ),
];

/// The oEmbed endpoint to ask about `url` without fetching it, for the known providers.
pub fn known_endpoint(url: &Url) -> Option<Url> {
    let host = url.host_str()?.to_ascii_lowercase();
    let path = url.path();
    let (_, _, endpoint) = PROVIDERS.iter().find(|(hosts, prefixes, _)| {
        hosts.contains(&host.as_str()) && prefixes.iter().any(|p| path.starts_with(p))
    })?;
    // Twitter's and X's endpoint only serves statuses; profiles are plain pages.
    if host.contains("twitter.com") || host.contains("x.com") {
        if !path.contains("/status/") {
            return None;
        }
    } else if path == "/" {
        return None;
    }
    let mut endpoint = Url::parse(endpoint).ok()?;
    endpoint
        .query_pairs_mut()
        .append_pair("url", url.as_str())
        .append_pair("format", "json");
    Some(endpoint)
}

/// Preview fields from an oEmbed answer.
#[derive(Debug, Default, PartialEq)]
pub struct Embed {
    pub og: Map<String, Value>,
    pub image: Option<Url>,
    /// The `html` of rich and video embeds, for a description made from its text.
    pub html: Option<String>,
}

/// Reads an oEmbed JSON answer (received from `base`); `None` if it is not one.
pub fn parse(body: &[u8], base: &Url) -> Option<Embed> {
    let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let text = |key: &str| {
        json.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let image_at = |key: &str| {
        text(key)
            .and_then(|u| base.join(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    };
    let mut embed = Embed::default();
    if let Some(title) = text("title").or(text("author_name")) {
        embed.og.insert("og:title".into(), title.into());
    }
    if let Some(provider) = text("provider_name") {
        embed.og.insert("og:site_name".into(), provider.into());
    }
    embed.image = image_at("thumbnail_url");
    match text("type") {
        Some("photo") => embed.image = image_at("url").or(embed.image),
        Some("video") => {
            embed.og.insert("og:type".into(), "video.other".into());
            embed.html = text("html").map(str::to_owned);
        }
        Some("rich") => embed.html = text("html").map(str::to_owned),
        Some("link") => {
            embed.og.insert("og:type".into(), "website".into());
        }
        _ => {}
    }
    Some(embed)
}
