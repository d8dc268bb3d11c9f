//! What every request passes before a handler sees it, and what every response carries.
//!
//! - **Host**: the `Host` header names this gateway: an IP address, or one of the configured
//!   names (`--allowed-hosts`, `localhost` by default). A page on a name an attacker controls
//!   that resolves to this gateway (DNS rebinding) is refused.
//! - **State changes** (POST, PUT, PATCH, DELETE): a browser's request must come from this
//!   gateway's own pages: its `Origin`, when it sends one, is the origin of the `Host` it asked
//!   (or one of `--allowed-origins`). A body must be `application/json`: a plain HTML form or a
//!   `text/plain` POST from another site is refused before anything happens. (The session
//!   cookie is `SameSite=Strict` as well.) The one exception is a route whose body the route
//!   table declares to be bytes (`bytes_body`: the upload, a `PUT`), which takes
//!   `application/octet-stream`: no form can send that either, and a `PUT` from another site is
//!   preflighted, which this gateway never allows.
//! - **Responses** carry `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
//!   `Referrer-Policy: no-referrer`.

use axum::body::Body;
use axum::extract::{Request, State as StateOf};
use axum::http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, REFERRER_POLICY, TRANSFER_ENCODING,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::State;
use super::http::ApiError;
use agora_nats::error::ErrorCode;

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

/// The host name of a `Host` header (without its port; an IPv6 literal without brackets).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) { name } else { host }
    })
}

/// Whether `host` (a `Host` header) names this gateway.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok() || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Whether a state-changing request with these headers may go on: the origin check and the
/// JSON-only body (`application/octet-stream` only for an `upload`).
pub fn change_allowed(
    headers: &HeaderMap,
    allowed_origins: &[String],
    upload: bool,
) -> Result<(), ApiError> {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(origin) = text(ORIGIN) {
        let own = text(HOST).is_some_and(|host| {
            origin.eq_ignore_ascii_case(&format!("http://{host}"))
                || origin.eq_ignore_ascii_case(&format!("https://{host}"))
        });
        if !own && !allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return Err(refused(format!("requests from {origin} may not change anything here")));
        }
    }
    let has_body = text(CONTENT_LENGTH).is_some_and(|length| length != "0")
        || headers.contains_key(TRANSFER_ENCODING);
    let wanted = if upload { "application/octet-stream" } else { "application/json" };
    let fits = text(CONTENT_TYPE).is_some_and(|kind| {
        kind.split(';').next().is_some_and(|kind| kind.trim().eq_ignore_ascii_case(wanted))
    });
    if has_body && !fits {
        return Err(ApiError::invalid(format!("a request body here is {wanted}"))
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    Ok(())
}

/// The middleware.
pub async fn guard(StateOf(state): StateOf<State>, request: Request<Body>, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !host_allowed(host, &state.config.allowed_hosts) {
        return refused(format!("this gateway does not answer for {host:?}")).into_response();
    }
    let changes =
        matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let upload = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|route| super::routes::takes_bytes(request.method(), route.as_str()));
    if changes && let Err(error) = change_allowed(headers, &state.config.allowed_origins, upload) {
        return error.into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_this_gateways_names_are_answered() {
        let allowed = vec!["localhost".to_owned(), "agora.example".to_owned()];
        for good in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.7",
            "AGORA.example:443",
        ] {
            assert!(host_allowed(good, &allowed), "{good}");
        }
        for bad in
            ["", "evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io"]
        {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn changes_come_from_our_pages_as_json() {
        let ok = [
            headers(&[
                ("host", "localhost:8080"),
                ("origin", "http://localhost:8080"),
                ("content-type", "application/json"),
                ("content-length", "2"),
            ]),
            headers(&[
                ("host", "localhost:8080"),
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", "2"),
            ]),
            // No body (a legacy route), no Origin (a program, not a browser).
            headers(&[("host", "localhost:8080")]),
            headers(&[("host", "localhost:8080"), ("content-length", "0")]),
        ];
        for headers in ok {
            assert!(change_allowed(&headers, &[], false).is_ok(), "{headers:?}");
        }
        let refused = [
            headers(&[
                ("host", "localhost:8080"),
                ("origin", "http://evil.example"),
                ("content-type", "application/json"),
                ("content-length", "2"),
            ]),
            headers(&[("host", "localhost:8080"), ("origin", "null")]),
            headers(&[
                ("host", "localhost:8080"),
                ("content-type", "text/plain"),
                ("content-length", "10"),
            ]),
            headers(&[
                ("host", "localhost:8080"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "10"),
            ]),
            headers(&[("host", "localhost:8080"), ("transfer-encoding", "chunked")]),
        ];
        for headers in refused {
            assert!(change_allowed(&headers, &[], false).is_err(), "{headers:?}");
            assert!(change_allowed(&headers, &[], true).is_err(), "{headers:?}");
        }
        let partner = headers(&[("host", "api.example"), ("origin", "https://app.example")]);
        assert!(change_allowed(&partner, &["https://app.example".to_owned()], false).is_ok());
    }

    /// An upload's body is bytes, and only an upload's: JSON is refused there, bytes anywhere
    /// else; the origin check is the same.
    #[test]
    fn an_upload_is_bytes_and_only_an_upload() {
        let bytes = |origin: &'static str| {
            headers(&[
                ("host", "localhost:8080"),
                ("origin", origin),
                ("content-type", "application/octet-stream"),
                ("content-length", "5"),
            ])
        };
        assert!(change_allowed(&bytes("http://localhost:8080"), &[], true).is_ok());
        assert!(change_allowed(&bytes("http://localhost:8080"), &[], false).is_err());
        assert!(change_allowed(&bytes("http://evil.example"), &[], true).is_err());
        let json = headers(&[
            ("host", "localhost:8080"),
            ("content-type", "application/json"),
            ("content-length", "2"),
        ]);
        assert!(change_allowed(&json, &[], true).is_err());
        // An empty upload (an empty file) needs no type.
        assert!(change_allowed(&headers(&[("host", "localhost:8080")]), &[], true).is_ok());
    }
}
