//! What every handler shares: the coded error answered as JSON with its code's status, the
//! extractors that turn axum's rejections into `invalid_request`, and forwarding one JSON
//! request to one subject.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use agora_nats::client::{AgoraClient, ClientError};
use agora_nats::error::{ErrorBody, ErrorCode, ServiceError};

/// A failed API call: the service's coded error (or one of the gateway's own), answered with
/// the code's HTTP status and the body `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub error: ServiceError,
    /// A status other than the code's own (405, 413, 416).
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ServiceError::new(code, message), status: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        Self { error, status: None }
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Service(error) => error.into(),
            other => Self::new(ErrorCode::Unavailable, other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        (status, Json(ErrorBody { error: self.error })).into_response()
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// A JSON reply as the service sent it.
pub fn json_bytes(bytes: Bytes) -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

/// Sends `request` (as JSON) to `subject` with `agora` (the gateway acting for the caller) and
/// answers with the reply.
pub async fn forward<T: Serialize>(agora: &AgoraClient, subject: &str, request: &T) -> ApiResult {
    let payload = serde_json::to_vec(request)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot encode: {e}")))?;
    forward_bytes(agora, subject, Bytes::from(payload)).await
}

/// Sends a JSON body to `subject` as it came and answers with the reply.
pub async fn forward_bytes(agora: &AgoraClient, subject: &str, payload: Bytes) -> ApiResult {
    Ok(json_bytes(agora.request_bytes(subject, payload).await?))
}

/// A request body that is JSON (empty when `empty_ok`), within the size limit.
pub fn json_body(body: Result<Bytes, BytesRejection>, empty_ok: bool) -> Result<Bytes, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::invalid(format!("cannot read the body: {}", rejection.body_text()))
            .with_status(rejection.status())
    })?;
    if body.is_empty() && empty_ok {
        return Ok(body);
    }
    agora_nats::service::check_object(&body)
        .and_then(|()| {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| format!("not JSON: {e}"))
        })
        .map_err(|e| ApiError::invalid(format!("bad body: {e}")))?;
    Ok(body)
}

/// A body parsed as `T`.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = json_body(body, false)?;
    agora_nats::service::from_object(&body).map_err(|e| ApiError::invalid(format!("bad body: {e}")))
}

pub fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| ApiError::invalid(format!("bad path: {}", rejection.body_text())))
}

pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::invalid(format!("bad query: {}", rejection.body_text())))
}

pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {method} {}", uri.path()))
}

pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(format!("{} does not take {method}", uri.path()))
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}
