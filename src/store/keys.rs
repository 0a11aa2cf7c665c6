//! Every sled tree key, built and parsed in this one place: a media id's key, an async
//! reservation's, a thumbnail's (rendered from stored bytes, or fetched from a remote origin),
//! an inline blob's chunks, a URL preview's. Callers outside the store name what they want;
//! the byte layout of the trees is decided here only.

use crate::model::{id::MediaKey, thumb::ThumbSpec};

/// Prefix of the keys under which thumbnails fetched from a remote server are kept.
pub const REMOTE_THUMB_PREFIX: &str = "remote:";

/// `thumbkey_thumb` key of the thumbnail `spec` rendered here from the bytes `sha256`:
/// `sha256/WxH/method/animated`.
pub fn thumb(sha256: &str, spec: ThumbSpec) -> String {
    format!("{sha256}/{}", thumb_spec(spec))
}

/// `thumbkey_thumb` key of the thumbnail `spec` of remote media as its origin sent it:
/// `remote:server/mediaId/WxH/method/animated`. The `remote:` prefix keeps these apart from
/// thumbnails rendered here, which are keyed by their source's hash.
pub fn remote_thumb(media: &MediaKey, spec: ThumbSpec) -> String {
    format!(
        "{REMOTE_THUMB_PREFIX}{}/{}/{}",
        media.server_name.as_str(),
        media.media_id.as_str(),
        thumb_spec(spec)
    )
}

/// The part of a thumbnail key naming the thumbnail: `WxH/method/animated`.
fn thumb_spec(spec: ThumbSpec) -> String {
    let method = spec.method.as_str();
    format!("{}x{}/{method}/{}", spec.width, spec.height, spec.animated)
}

/// What a thumbnail in `thumbkey_thumb` is made from.
#[derive(Clone, Copy)]
pub(super) enum ThumbSource<'a> {
    /// Bytes stored here: the key starts with their sha256.
    Bytes(&'a str),
    /// Remote media whose origin sent the thumbnail: `remote:server/mediaId/...`.
    Remote(&'a [u8]),
}

/// What the thumbnail under `key` is made from, if the key is well formed.
pub(super) fn thumb_source(key: &str) -> Option<ThumbSource<'_>> {
    if key.starts_with(REMOTE_THUMB_PREFIX) {
        return remote_thumb_media(key.as_bytes()).map(ThumbSource::Remote);
    }
    key.split_once('/')
        .map(|(sha256, _)| ThumbSource::Bytes(sha256))
}

/// `urlts_preview` key of the preview of `url` as of the hour `hour` (since the epoch): the URL,
/// a NUL (which no URL holds), the hour big-endian.
pub fn preview(url: &str, hour: u64) -> Vec<u8> {
    let mut key = url.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&hour.to_be_bytes());
    key
}

/// Key of a media id in `mediaid_meta`, `mediaid_access` and `mediaid_blocked`: `server_name`
/// and `media_id` joined by `/`, which neither may contain.
pub fn media(key: &MediaKey) -> Vec<u8> {
    format!("{}/{}", key.server_name.as_str(), key.media_id.as_str()).into_bytes()
}

/// The media id a `server/mediaId` key names; `None` if it is not one.
pub fn parse_media(db_key: &[u8]) -> Option<MediaKey> {
    let (server, id) = std::str::from_utf8(db_key).ok()?.split_once('/')?;
    Some(MediaKey {
        server_name: server.parse().ok()?,
        media_id: id.parse().ok()?,
    })
}

/// The server name part of a `server/mediaId` key.
pub(super) fn media_server(db_key: &[u8]) -> &[u8] {
    db_key.split(|&b| b == b'/').next().unwrap_or_default()
}

/// `userid_pending` key of the reservation of `key` by `user`: `user\0server/mediaId`.
pub(super) fn pending(user: &str, key: &MediaKey) -> Vec<u8> {
    pending_of(user, &media(key))
}

/// `userid_pending` key of the reservation of the media whose `mediaid_meta` key is `db_key`.
pub(super) fn pending_of(user: &str, db_key: &[u8]) -> Vec<u8> {
    let mut out = pending_prefix(user);
    out.extend_from_slice(db_key);
    out
}

/// Prefix of every `userid_pending` key of `user`; user ids never contain a NUL.
pub(super) fn pending_prefix(user: &str) -> Vec<u8> {
    let mut out = user.as_bytes().to_vec();
    out.push(0);
    out
}

/// The `mediaid_meta` key a `userid_pending` key reserves (empty if it is malformed).
pub(super) fn pending_media(pending_key: &[u8]) -> &[u8] {
    pending_key
        .splitn(2, |b| *b == 0)
        .nth(1)
        .unwrap_or_default()
}

/// Prefix of the keys of every thumbnail rendered from the bytes `sha256`.
pub(super) fn thumb_prefix(sha256: &str) -> Vec<u8> {
    let mut out = sha256.as_bytes().to_vec();
    out.push(b'/');
    out
}

/// Prefix of the keys of every thumbnail fetched from the origin of the media `db_key`.
pub(super) fn remote_thumb_prefix(db_key: &[u8]) -> Vec<u8> {
    let mut out = REMOTE_THUMB_PREFIX.as_bytes().to_vec();
    out.extend_from_slice(db_key);
    out.push(b'/');
    out
}

/// The `server/mediaId` a `remote:server/mediaId/WxH/method/animated` key belongs to.
pub(super) fn remote_thumb_media(thumb_key: &[u8]) -> Option<&[u8]> {
    let rest = thumb_key.strip_prefix(REMOTE_THUMB_PREFIX.as_bytes())?;
    let server_end = rest.iter().position(|&b| b == b'/')?;
    let id_end = rest
        .get(server_end + 1..)?
        .iter()
        .position(|&b| b == b'/')?;
    rest.get(..server_end + 1 + id_end)
}

/// `userid_media` key of the media `db_key` that `user` created at `created_at`: the user id,
/// a NUL (which no user id holds), the time big-endian, the `server/mediaId` key; so a prefix
/// scan lists one user's media oldest first.
pub(super) fn user_media(user: &str, created_at: u64, db_key: &[u8]) -> Vec<u8> {
    let mut out = pending_prefix(user);
    out.extend_from_slice(&created_at.to_be_bytes());
    out.extend_from_slice(db_key);
    out
}

/// Prefix of every `userid_media` key of `user`.
pub(super) fn user_media_prefix(user: &str) -> Vec<u8> {
    pending_prefix(user)
}

/// The user, creation time and `server/mediaId` key a `userid_media` key names.
pub(super) fn parse_user_media(key: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let nul = key.iter().position(|&b| b == 0)?;
    let (user, rest) = key.split_at_checked(nul)?;
    let (at, db_key) = rest.get(1..)?.split_at_checked(8)?;
    Some((user, u64::from_be_bytes(at.try_into().ok()?), db_key))
}

/// Length of a hex sha256, the fixed-size start of every `sha256_holder` key.
const SHA256_HEX: usize = 64;

/// `sha256_holder` key of `holder` (a `server/mediaId` key, or a `remote:` thumbnail key) holding
/// the bytes `sha256`: the hex hash, then the holder.
pub(super) fn hash_holder(sha256: &str, holder: &[u8]) -> Vec<u8> {
    let mut out = sha256.as_bytes().to_vec();
    out.extend_from_slice(holder);
    out
}

/// The holder a `sha256_holder` key names, if the key is well formed.
pub(super) fn parse_hash_holder(key: &[u8]) -> Option<&[u8]> {
    key.get(SHA256_HEX..).filter(|rest| !rest.is_empty())
}

/// Key of chunk `index` of an inline blob: the 32 hash bytes, then the big-endian index, so a
/// prefix scan returns the chunks in order.
pub fn chunk(sha256: &str, index: u32) -> Vec<u8> {
    let mut key = hex::decode(sha256).unwrap_or_default();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Prefix of every chunk key of the inline blob `sha256`.
pub fn chunk_prefix(sha256: &str) -> Vec<u8> {
    hex::decode(sha256).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use mxmedia_image::Method;

    use super::{
        hash_holder, parse_hash_holder, parse_user_media, remote_thumb, remote_thumb_media, thumb,
        user_media,
    };
    use crate::model::{id::MediaKey, thumb::ThumbSpec};

    #[test]
    fn thumb_keys_name_their_media() {
        assert_eq!(
            remote_thumb_media(b"remote:example.org/abc/96x96/crop/false"),
            Some(&b"example.org/abc"[..])
        );
        assert_eq!(
            remote_thumb_media(b"remote:[::1]:8448/x_y/1x1/scale/true"),
            Some(&b"[::1]:8448/x_y"[..])
        );
        assert_eq!(remote_thumb_media(b"remote:example.org"), None);
        assert_eq!(remote_thumb_media(b"abc/96x96/crop/false"), None);
    }

    /// Thumbnail keys keep the spelling stored thumbnails were written under, so an upgrade
    /// finds every thumbnail already rendered or fetched.
    #[test]
    fn thumb_keys_keep_their_stored_spelling() {
        let spec = ThumbSpec {
            width: 96,
            height: 64,
            method: Method::Crop,
            animated: false,
        };
        assert_eq!(thumb("ab12", spec), "ab12/96x64/crop/false");
        let media = MediaKey {
            server_name: "example.org".parse().expect("server name"),
            media_id: "abc".parse().expect("media id"),
        };
        let scaled = ThumbSpec {
            method: Method::Scale,
            animated: true,
            ..spec
        };
        assert_eq!(
            remote_thumb(&media, scaled),
            "remote:example.org/abc/96x64/scale/true"
        );
        assert_eq!(
            remote_thumb_media(remote_thumb(&media, spec).as_bytes()),
            Some(&b"example.org/abc"[..])
        );
    }

    /// Index keys give back what they were built from; malformed ones give nothing.
    #[test]
    fn index_keys_round_trip() {
        let key = user_media("@a:x", 7, b"x/abc");
        assert_eq!(
            parse_user_media(&key),
            Some((&b"@a:x"[..], 7, &b"x/abc"[..]))
        );
        assert_eq!(parse_user_media(b"@a:x\0short"), None);
        assert_eq!(parse_user_media(b"no nul"), None);
        let sha = "ab".repeat(32);
        let held = hash_holder(&sha, b"remote:y/id/1x1/crop/false");
        assert_eq!(
            parse_hash_holder(&held),
            Some(&b"remote:y/id/1x1/crop/false"[..])
        );
        assert_eq!(parse_hash_holder(sha.as_bytes()), None);
    }
}
