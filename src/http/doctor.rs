//! The server's side of `mxmedia doctor`: a request carrying the doctor nonce of this data dir
//! gets, on whatever answer it receives, a header saying which `Host` and forwarding headers
//! reached mxmedia (`doctor::nonce` owns the design). Every other request passes untouched.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    web,
};

use crate::{
    clock::now_ms,
    doctor::nonce::{ECHO_HEADER, Echo, HEADER, NonceFile},
    state::AppState,
};

/// Adds `ECHO_HEADER` to the answer of a request presenting the valid doctor nonce.
pub async fn echo(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let presented = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seen = match (presented, req.app_data::<web::Data<AppState>>()) {
        (Some(presented), Some(state)) => {
            let file = NonceFile::in_data_dir(&state.config.data_dir);
            file.holds(&presented, now_ms()).await.then(|| {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                Echo {
                    // HTTP/2 carries the host in the request target, not a header.
                    host: header("host")
                        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned())),
                    forwarded_for: header("x-forwarded-for"),
                    forwarded_proto: header("x-forwarded-proto"),
                }
            })
        }
        _ => None,
    };
    let mut res = next.call(req).await?;
    if let Some(echo) = seen
        && let Ok(value) = HeaderValue::from_str(&echo.encode())
    {
        res.headers_mut()
            .insert(HeaderName::from_static(ECHO_HEADER), value);
    }
    Ok(res)
}
