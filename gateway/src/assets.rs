//! The dashboard: plain HTML, CSS and JavaScript, compiled into the binary (no build step,
//! no CDN: it works offline and on a machine without npm).

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::http::ApiError;
use agora_nats::error::ErrorCode;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// Scripts and styles only from the gateway itself: text from users (chat, logs, names) can
/// never run as code, even if some rendering path forgot to treat it as text.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub async fn index() -> Response {
    page(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.css" => page(APP_CSS, "text/css; charset=utf-8"),
        "app.js" => page(APP_JS, "text/javascript; charset=utf-8"),
        _ => ApiError::new(ErrorCode::NotFound, format!("no asset {file:?}")).into_response(),
    }
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
        .into_response()
}
