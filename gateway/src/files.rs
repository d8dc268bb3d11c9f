//! File downloads over HTTP: the file's stat first (size, digest), then its chunks from the
//! file service, [`DOWNLOAD_WINDOW`] in flight, streamed to the browser as they come. Every
//! chunk is asked for the digest of the stat, so a file rewritten during the download breaks
//! the stream (the client sees a short body) instead of mixing two versions.
//!
//! `Content-Length`, `Accept-Ranges`, `ETag` (the sha256), one `Range` (`bytes=a-b`, `a-`,
//! `-n`; several ranges get the whole file), `If-None-Match`, and `HEAD`.

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, put};
use futures::StreamExt;
use serde::Deserialize;

use super::http::{ApiError, ApiResult, forward, forward_bytes, path, query};
use super::routes::{Reply, Route, schema};
use super::session::Signed;
use agora_nats::files::client::DOWNLOAD_WINDOW;
use agora_nats::files::wire::{ListFilesRequest, StatRequest};
use agora_nats::subjects;

/// The file routes: list, stat, download, upload, removal, cache.
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/files",
        "files",
        "List files",
        Some(schema::<ListFilesRequest>),
        ["prefix", "limit"],
        None,
        get(list_files)
    ),
    route!(
        "GET",
        "/api/files/stat/{*name}",
        "files",
        "A file's size, digest and chunks",
        Some(schema::<StatRequest>),
        [],
        None,
        get(file_stat)
    ),
    route!(
        "GET",
        "/api/files/content/{*name}",
        "files",
        "Download (streamed; Range, If-None-Match and HEAD supported)",
        Some(schema::<ContentPath>),
        ["download"],
        None,
        get(content),
        Reply::Bytes
    ),
    Route {
        method: "PUT",
        path: "/api/files/content/{*name}",
        tag: "files",
        summary: "Upload (the manager's): the body is the file's bytes (application/octet-stream), \
                  up to the file service's upload limit (a body larger than one NATS message \
                  gives its Content-Length, and goes on in parts as it arrives); it replaces the \
                  file of that name whole, and the reply is its stat",
        fields: Some(schema::<StatRequest>),
        query: &[],
        body: None,
        bytes_body: true,
        reply: Reply::Json,
        handler: || put(upload),
    },
    route!(
        "DELETE",
        "/api/files/content/{*name}",
        "files",
        "Remove a file (the manager's); the reply is the file as it was",
        Some(schema::<StatRequest>),
        [],
        None,
        delete(remove)
    ),
    route!(
        "GET",
        "/api/files/cache",
        "files",
        "The answering file server's cache",
        None,
        [],
        None,
        get(file_cache)
    ),
];

/// The parameters of a download: the file's name, and `download=1`.
#[derive(Debug, schemars::JsonSchema)]
#[allow(dead_code)] // a schema only: the handler reads the name and `ContentQuery`
struct ContentPath {
    #[schemars(length(min = 1, max = 1024))]
    name: String,
    #[serde(flatten)]
    query: ContentQuery,
}

pub async fn list_files(
    signed: Signed,
    request: Result<Query<ListFilesRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subjects::files::LIST_SUBJECT, &query(request)?).await
}

pub async fn file_stat(signed: Signed, name: Result<Path<String>, PathRejection>) -> ApiResult {
    let name = path(name)?;
    forward(&signed.agora, subjects::files::STAT_SUBJECT, &StatRequest { name }).await
}

/// `PUT /api/files/content/{*name}`: the manager's upload. The body is read only once the
/// caller is known to be a manager. What fits one NATS message goes as one; a larger body
/// (its `Content-Length` given) goes to the file service in parts as it arrives, so the
/// gateway never holds more than a part of it.
pub async fn upload(
    signed: Signed,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult {
    signed.manager("uploading a file")?;
    let name = path(name)?;
    let max = signed.agora.upload_bytes_max();
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let stat = match length {
        Some(length) if length > max as u64 => {
            let parts = body.into_data_stream();
            signed.agora.put_file_parts(&name, length, None, parts).await?
        }
        _ => {
            let bytes = axum::body::to_bytes(body, max).await.map_err(|error| {
                if length.is_none() {
                    ApiError::invalid(format!(
                        "an upload of more than {max} bytes gives its Content-Length"
                    ))
                    .with_status(StatusCode::LENGTH_REQUIRED)
                } else {
                    ApiError::invalid(format!("the body did not arrive whole: {error}"))
                }
            })?;
            signed.agora.put_file(&name, bytes).await?
        }
    };
    Ok(axum::Json(stat).into_response())
}

/// `DELETE /api/files/content/{*name}`: the manager's removal.
pub async fn remove(signed: Signed, name: Result<Path<String>, PathRejection>) -> ApiResult {
    signed.manager("removing a file")?;
    let name = path(name)?;
    forward(&signed.agora, subjects::files::DELETE_SUBJECT, &StatRequest { name }).await
}

pub async fn file_cache(signed: Signed) -> ApiResult {
    forward_bytes(&signed.agora, subjects::files::CACHE_SUBJECT, Bytes::new()).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentQuery {
    /// `download=1` (every file is served as a download; kept for old links).
    #[schemars(range(min = 0, max = 1))]
    pub download: Option<u8>,
}

/// `GET /api/files/content/{*name}`.
pub async fn content(
    signed: Signed,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    options: Result<Query<ContentQuery>, QueryRejection>,
) -> ApiResult {
    let name = path(name)?;
    let options = query(options)?;
    let stat = signed.agora.file_stat(&name).await?;
    let etag = format!("\"{}\"", stat.sha256);
    let header = |value: &str| {
        HeaderValue::from_str(value).map_err(|_| ApiError::invalid("a header value is not ASCII"))
    };
    let mut response_headers = HeaderMap::new();
    response_headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(ETAG, header(&etag)?);
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&name)));
    // A served file never runs on the dashboard's origin: it is a download, its type is
    // not guessed, and were a browser to show it anyway, it would be a sandbox.
    let _ = options.download;
    let base = name.rsplit('/').next().unwrap_or(&name).replace(['"', '\\'], "_");
    let base = if base.is_ascii() && !base.chars().any(char::is_control) {
        base
    } else {
        "download".to_owned()
    };
    response_headers
        .insert(CONTENT_DISPOSITION, header(&format!("attachment; filename=\"{base}\""))?);
    response_headers
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let range = match headers.get(RANGE).and_then(|value| value.to_str().ok()) {
        None => None,
        Some(text) => match parse_range(text, stat.size) {
            Ok(range) => range,
            Err(Unsatisfiable) => {
                response_headers.insert(CONTENT_RANGE, header(&format!("bytes */{}", stat.size))?);
                let error = ApiError::invalid(format!("range {text:?} is outside the file"))
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
                return Ok((response_headers, error).into_response());
            }
        },
    };
    let (start, end, status) = match range {
        Some((start, end)) => {
            let content_range = format!("bytes {start}-{}/{}", end - 1, stat.size);
            response_headers.insert(CONTENT_RANGE, header(&content_range)?);
            (start, end, StatusCode::PARTIAL_CONTENT)
        }
        None => (0, stat.size, StatusCode::OK),
    };
    response_headers.insert(CONTENT_LENGTH, header(&(end - start).to_string())?);
    let chunk = stat.chunk_bytes.max(1);
    let agora = signed.agora.clone();
    let sha256 = stat.sha256.clone();
    let chunks = futures::stream::iter((start..end).step_by(chunk as usize))
        .map(move |offset| {
            let (agora, name, sha256) = (agora.clone(), name.clone(), sha256.clone());
            async move {
                let length = Some(chunk.min(end - offset));
                agora
                    .file_range(&name, offset, length, Some(&sha256))
                    .await
                    .map_err(std::io::Error::other)
            }
        })
        .buffered(DOWNLOAD_WINDOW);
    Ok((status, response_headers, Body::from_stream(chunks)).into_response())
}

/// A `Range` header that no byte of the file satisfies (answered 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// One byte range of a file of `size` bytes as `[start, end)`; `Ok(None)` means the whole
/// file (no range, or several).
pub fn parse_range(text: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = text.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| Unsatisfiable)?;
        if suffix == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(suffix), size)
    } else {
        let start: u64 = first.parse().map_err(|_| Unsatisfiable)?;
        let end = if last.is_empty() {
            size
        } else {
            let last: u64 = last.parse().map_err(|_| Unsatisfiable)?;
            if last < start {
                return Err(Unsatisfiable);
            }
            last.saturating_add(1).min(size)
        };
        (start, end)
    };
    if range.0 >= size { Err(Unsatisfiable) } else { Ok(Some(range)) }
}

/// A content type from the name's extension (the common ones; bytes otherwise).
fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "txt" | "md" | "log" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "csv" => "text/csv; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 100))));
        assert_eq!(parse_range("bytes=0-0,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=9-3", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=-0", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=a-b", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-", 0), Err(Unsatisfiable));
    }
}
