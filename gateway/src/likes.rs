//! The likes routes: top, nodes, an item's count, like and unlike.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use serde::Deserialize;

use super::http::{ApiError, ApiResult, forward, forward_bytes, json_body, path, query};
use super::routes::{Route, schema};
use super::session::Signed;
use agora_nats::likes::wire::{LikeRequest, TopRequest};
use agora_nats::subjects;

/// The likes routes.
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/likes/top",
        "likes",
        "The most-liked items",
        Some(schema::<TopRequest>),
        ["limit"],
        None,
        get(top_likes)
    ),
    route!(
        "GET",
        "/api/likes/nodes",
        "likes",
        "The likes nodes and the current leader",
        None,
        [],
        None,
        get(like_nodes)
    ),
    route!(
        "GET",
        "/api/likes/items/{item}",
        "likes",
        "An item's count (user= says if liked)",
        Some(schema::<ItemUser>),
        ["user"],
        None,
        get(like_count)
    ),
    route!(
        "POST",
        "/api/likes/items/{item}/like",
        "likes",
        "Like an item",
        Some(schema::<ItemPath>),
        [],
        Some(schema::<LikeRequest>),
        post(like)
    ),
    route!(
        "POST",
        "/api/likes/items/{item}/unlike",
        "likes",
        "Take a user's like back",
        Some(schema::<ItemPath>),
        [],
        Some(schema::<LikeRequest>),
        post(unlike)
    ),
];

/// The parameters of `GET /api/likes/items/{item}`: the item, and a user asking if they like
/// it.
#[derive(Debug, schemars::JsonSchema)]
#[allow(dead_code)] // a schema only: the handler reads `ItemPath` and `LikeRequest`
struct ItemUser {
    #[schemars(pattern(agora_nats::pattern::ITEM))]
    item: String,
    #[schemars(pattern(agora_nats::pattern::LIKES_USER))]
    user: Option<String>,
}

/// The item of a likes route's path.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ItemPath {
    #[schemars(pattern(agora_nats::pattern::ITEM))]
    pub item: String,
}

/// An item as a subject token: checked before it goes into a subject.
fn item(item: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let item = path(item)?;
    agora_core::likes::ItemId::parse(&item).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(item)
}

pub async fn top_likes(
    signed: Signed,
    request: Result<Query<TopRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subjects::likes::TOP_SUBJECT, &query(request)?).await
}

pub async fn like_nodes(signed: Signed) -> ApiResult {
    forward_bytes(&signed.agora, subjects::likes::NODES_SUBJECT, Bytes::new()).await
}

pub async fn like_count(
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    request: Result<Query<LikeRequest>, QueryRejection>,
) -> ApiResult {
    let item = item(name)?;
    forward(&signed.agora, &subjects::likes::count(&item), &query(request)?).await
}

pub async fn like(
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let item = item(name)?;
    forward_bytes(&signed.agora, &subjects::likes::like(&item), json_body(body, true)?).await
}

pub async fn unlike(
    signed: Signed,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let item = item(name)?;
    forward_bytes(&signed.agora, &subjects::likes::unlike(&item), json_body(body, true)?).await
}
