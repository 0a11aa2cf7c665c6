use super::{FetchFailure, absolute_url, classify};

/// Remote error answers mean what the spec says
/// (https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid);
/// "unrecognized" is decided as Synapse does.
#[test]
fn remote_errors_are_classified() {
    let json = |errcode: &str| format!(r#"{{"errcode":"{errcode}","error":"x"}}"#).into_bytes();
    let cases: Vec<(u16, Vec<u8>, FetchFailure)> = vec![
        (404, json("M_UNRECOGNIZED"), FetchFailure::Unrecognized),
        (400, json("M_UNRECOGNIZED"), FetchFailure::Unrecognized),
        (405, json("M_UNRECOGNIZED"), FetchFailure::Unrecognized),
        (404, Vec::new(), FetchFailure::Unrecognized),
        (
            404,
            b"<html>Not Found</html>".to_vec(),
            FetchFailure::Unrecognized,
        ),
        (404, json("M_NOT_FOUND"), FetchFailure::NotFound),
        (404, b"{}".to_vec(), FetchFailure::NotFound),
        (
            504,
            json("M_NOT_YET_UPLOADED"),
            FetchFailure::NotYetUploaded,
        ),
        (502, json("M_TOO_LARGE"), FetchFailure::TooLarge),
        (413, json("M_TOO_LARGE"), FetchFailure::TooLarge),
        (
            400,
            json("M_UNKNOWN"),
            FetchFailure::Remote("origin answered 400".into()),
        ),
        (
            500,
            Vec::new(),
            FetchFailure::Remote("origin answered 500".into()),
        ),
        (
            401,
            json("M_UNAUTHORIZED"),
            FetchFailure::Remote("origin answered 401".into()),
        ),
    ];
    for (status, body, expected) in cases {
        assert_eq!(classify(status, &body), expected, "{status}");
    }
}

/// Redirect targets must be https; relative ones stay on the same origin.
#[test]
fn redirect_targets() {
    let base = "https://cdn.example.org:8443/a/b?c=d";
    assert_eq!(
        absolute_url("https://other.example/x", base).unwrap(),
        "https://other.example/x"
    );
    assert_eq!(
        absolute_url("/y/z", base).unwrap(),
        "https://cdn.example.org:8443/y/z"
    );
    assert_eq!(
        absolute_url("/y", "https://cdn.example.org").unwrap(),
        "https://cdn.example.org/y"
    );
    assert!(absolute_url("http://plain.example/x", base).is_err());
    assert!(absolute_url("//evil.example/x", base).is_err());
    assert!(absolute_url("relative/x", base).is_err());
}
