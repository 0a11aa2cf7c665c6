use serde_json::json;

use super::{RequestParts, XMatrix, is_x_matrix, sign_request, verify_request};
use crate::error::Error;
use crate::ids::ServerName;
use crate::keys::{Signature, SigningKey};
use crate::test_vectors::{domain, key as spec_key};

const DOWNLOAD_URI: &str = "/_matrix/federation/v1/media/download/abc123?timeout_ms=20000";
const DOWNLOAD_SIG: &str =
    "rIsu5NwSqcaN3X3g6frvcyHM1qhRyGo7xqYVThhJ942B3aULroa3/oZyP0WVAY8oPZRgQLr3NaygxvBRNafTAA";
const DOWNLOAD_SIG_WITH_EMPTY_CONTENT: &str =
    "JW80QCsRpLiFhHN3S67u9sFZCzZfIx+QuWxXj5xiwEgV+2brW1nCVKOUWKstYxLyH67SzU0WHI+7cEYHocW+BQ";

fn sn(s: &str) -> ServerName {
    s.parse().unwrap()
}

fn download_request<'a>(origin: &'a ServerName, destination: &'a ServerName) -> RequestParts<'a> {
    RequestParts {
        method: "GET",
        uri: DOWNLOAD_URI,
        origin,
        destination,
        content: None,
    }
}

/// A download request signed with the key of the [cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors): canonical JSON, signature and
/// header, exactly.
#[test]
fn derived_download_vector() {
    let (origin, destination) = (domain(), sn("media.example.org"));
    let request = download_request(&origin, &destination);
    assert_eq!(
        request.signing_bytes().unwrap(),
        r#"{"destination":"media.example.org","method":"GET","origin":"domain","uri":"/_matrix/federation/v1/media/download/abc123?timeout_ms=20000"}"#
    );
    let auth = sign_request(&request, &spec_key()).unwrap();
    assert_eq!(auth.sig.to_base64(), DOWNLOAD_SIG);
    assert_eq!(
        auth.to_string(),
        format!(
            r#"X-Matrix origin="domain",destination="media.example.org",key="ed25519:1",sig="{DOWNLOAD_SIG}""#
        )
    );
    let key = spec_key().verify_key();
    verify_request(&auth, &destination, "GET", DOWNLOAD_URI, None, &key).unwrap();
}

/// Signing `"content": {}` for a body-less GET gives another signature, which a correct receiver
/// rejects: a GET signs no `content` at all (matrix-media-repo once got this wrong; see
/// [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication)).
#[test]
fn empty_content_is_not_no_content() {
    let (origin, destination) = (domain(), sn("media.example.org"));
    let empty = json!({});
    let request = RequestParts {
        content: Some(&empty),
        ..download_request(&origin, &destination)
    };
    let wrong = sign_request(&request, &spec_key()).unwrap();
    assert_eq!(wrong.sig.to_base64(), DOWNLOAD_SIG_WITH_EMPTY_CONTENT);
    let key = spec_key().verify_key();
    assert_eq!(
        verify_request(&wrong, &destination, "GET", DOWNLOAD_URI, None, &key),
        Err(Error::BadSignature)
    );
}

/// A thumbnail request signed with the key of the [cryptographic test vectors](https://spec.matrix.org/v1.16/appendices/#cryptographic-test-vectors).
#[test]
fn derived_thumbnail_vector() {
    let (origin, destination) = (domain(), sn("remote.example.com"));
    let request = RequestParts {
        method: "GET",
        uri: "/_matrix/federation/v1/media/thumbnail/abc123?width=96&height=96&method=crop&timeout_ms=20000",
        origin: &origin,
        destination: &destination,
        content: None,
    };
    assert_eq!(
        sign_request(&request, &spec_key()).unwrap().sig.to_base64(),
        "AIingVDMOOdPvSpO0p5AnWa09BrzMNTUZu92+EYp2Kw5MLZgm8WhLZxvP924xcluPCh/Nvnkw0pQQH14e+mkAQ"
    );
}

/// Verification fails for another destination, method, URI, body, key, or origin.
#[test]
fn verify_request_rejects_changes() {
    let (origin, ours) = (domain(), sn("media.example.org"));
    let key = spec_key().verify_key();
    let auth = sign_request(&download_request(&origin, &ours), &spec_key()).unwrap();
    let other = sn("evil.example.org");
    assert_eq!(
        verify_request(&auth, &other, "GET", DOWNLOAD_URI, None, &key),
        Err(Error::WrongDestination)
    );
    for (method, uri, content) in [
        ("POST", DOWNLOAD_URI, None),
        ("GET", "/_matrix/federation/v1/media/download/abc123", None),
        (
            "GET",
            "/_matrix/federation/v1/media/download/abc123?timeout_ms=20001",
            None,
        ),
        ("GET", DOWNLOAD_URI, Some(json!({"a": 1}))),
    ] {
        assert_eq!(
            verify_request(&auth, &ours, method, uri, content.as_ref(), &key),
            Err(Error::BadSignature),
            "{method} {uri}"
        );
    }
    let wrong_key = SigningKey::generate("1").unwrap().verify_key();
    assert_eq!(
        verify_request(&auth, &ours, "GET", DOWNLOAD_URI, None, &wrong_key),
        Err(Error::BadSignature)
    );
    let spoofed = XMatrix {
        origin: sn("other"),
        ..auth.clone()
    };
    assert_eq!(
        verify_request(&spoofed, &ours, "GET", DOWNLOAD_URI, None, &key),
        Err(Error::BadSignature)
    );
}

/// Without `destination` (pre-v1.3 senders) the receiver checks against its own name.
#[test]
fn missing_destination_uses_our_name() {
    let (origin, ours) = (domain(), sn("media.example.org"));
    let auth = sign_request(&download_request(&origin, &ours), &spec_key()).unwrap();
    let header = format!(
        "X-Matrix origin=domain,key=\"ed25519:1\",sig=\"{}\"",
        auth.sig.to_base64()
    );
    let parsed = XMatrix::parse(&header).unwrap();
    assert_eq!(parsed.destination, None);
    let key = spec_key().verify_key();
    verify_request(&parsed, &ours, "GET", DOWNLOAD_URI, None, &key).unwrap();
    assert_eq!(
        verify_request(&parsed, &sn("elsewhere"), "GET", DOWNLOAD_URI, None, &key),
        Err(Error::BadSignature)
    );
}

/// Requests with a JSON body sign it under `content` and verify with the same body only.
#[test]
fn request_with_body() {
    let (origin, destination) = (sn("a.example"), sn("b.example"));
    let body = json!({"server_keys": {"c.example": {}}});
    let key = SigningKey::generate("k").unwrap();
    let request = RequestParts {
        method: "POST",
        uri: "/_matrix/key/v2/query",
        origin: &origin,
        destination: &destination,
        content: Some(&body),
    };
    assert!(
        request
            .signing_bytes()
            .unwrap()
            .contains(r#""content":{"server_keys""#)
    );
    let auth = sign_request(&request, &key).unwrap();
    let vk = key.verify_key();
    verify_request(&auth, &destination, "POST", request.uri, Some(&body), &vk).unwrap();
    assert_eq!(
        verify_request(&auth, &destination, "POST", request.uri, None, &vk),
        Err(Error::BadSignature)
    );
}

fn sig_b64() -> String {
    crate::base64::encode([7u8; 64])
}

/// The parser accepts every form [spec: request authentication](https://spec.matrix.org/v1.16/server-server-api/#request-authentication) allows and yields the same credential.
#[test]
fn lenient_forms_parse_alike() {
    let sig = sig_b64();
    let expected = XMatrix {
        origin: sn("origin.hs.example.com"),
        destination: Some(sn("destination.hs.example.com")),
        key: "ed25519:key1".parse().unwrap(),
        sig: Signature::from_base64(&sig).unwrap(),
    };
    let forms = [
        format!(
            r#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="{sig}""#
        ),
        format!(
            r#"X-Matrix origin=origin.hs.example.com,destination=destination.hs.example.com,key=ed25519:key1,sig={sig}"#
        ),
        format!(
            "x-matrix  ORIGIN=\"origin.hs.example.com\" ,\tDestination = \"destination.hs.example.com\" , Key=\"ed25519:key1\",\t SIG=\"{sig}\"  "
        ),
        format!(
            r#"X-Matrix sig="{sig}",key="ed25519:key1",destination="destination.hs.example.com",origin="origin.hs.example.com""#
        ),
        format!(
            r#"X-Matrix origin="origin\.hs.example.com",destination="destination.hs.example.com",key="ed\25519:key1",signature="{sig}==""#
        ),
        format!(
            r#"X-Matrix origin="origin.hs.example.com",unknown="x\"y",foo=bar,destination="destination.hs.example.com",key="ed25519:key1",sig={sig},"#
        ),
        format!(
            r#"X-Matrix ,origin="origin.hs.example.com",,destination="destination.hs.example.com",key="ed25519:key1",sig="{sig}""#
        ),
    ];
    for form in forms {
        assert_eq!(XMatrix::parse(&form), Ok(expected.clone()), "{form}");
    }
    assert_eq!(XMatrix::parse(&expected.to_string()), Ok(expected));
}

/// Malformed headers are BadHeader, never a panic or a partial credential.
#[test]
fn malformed_headers() {
    let sig = sig_b64();
    let bad = [
        String::new(),
        "X-Matrix".to_owned(),
        "X-Matrix ".to_owned(),
        "Bearer abc".to_owned(),
        format!("X-Matrixorigin=a,key=ed25519:1,sig={sig}"),
        "X-Matrix origin=a,key=ed25519:1".to_owned(),
        format!("X-Matrix key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a,sig={sig}"),
        format!("X-Matrix origin=a,origin=b,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a,ORIGIN=a,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a,key=ed25519:1,sig={sig},signature={sig}"),
        format!("X-Matrix origin=a,key=ed25519:1,sig={sig},x=1,x=2"),
        format!("X-Matrix origin=\"a,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin,key=ed25519:1,sig={sig}"),
        format!("X-Matrix =a,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a\"b,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a_b,key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a,destination=\"\",key=ed25519:1,sig={sig}"),
        format!("X-Matrix origin=a,key=curve25519:1,sig={sig}"),
        "X-Matrix origin=a,key=ed25519:1,sig=Zm9v".to_owned(),
        format!("X-Matrix origin=\"a\u{1}\",key=ed25519:1,sig={sig}"),
        "X-Matrix origin=\"a\\".to_owned(),
        format!("X-Matrix origin=a,key=ed25519:1,sig={sig},é=1"),
    ];
    for header in bad {
        assert!(
            matches!(XMatrix::parse(&header), Err(Error::BadHeader(_))),
            "{header:?} should be a bad header"
        );
    }
}

/// Scheme detection is case-insensitive and needs the whole word.
#[test]
fn scheme_detection() {
    assert!(is_x_matrix("X-Matrix origin=a"));
    assert!(is_x_matrix("x-matrix origin=a"));
    assert!(!is_x_matrix("Bearer abc"));
    assert!(!is_x_matrix("X-Matrixy origin=a"));
    assert!(!is_x_matrix(""));
}
