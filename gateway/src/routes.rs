//! Every HTTP route of the gateway in one table. The router and the OpenAPI document are both
//! built from [`ROUTES`], so `/api/openapi.json` always matches what the gateway serves, and
//! every body and parameter schema is derived (schemars) from the type the handler parses.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, patch, post};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::api::{AssetChange, AssetsQuery, ItemPath, LogsQuery};
use super::chat::{OpenRequest, RoomChange, SendRequest};
use super::files::ContentQuery;
use super::live::EventsQuery;
use super::{State, api, assets, chat, files, live};
use agora_nats::bank::wire::{AmountRequest, BalanceRequest, TransferRequest};
use agora_nats::chat::wire::{HistoryRequest, SessionRequest, WhoRequest};
use agora_nats::coins::wire::{
    AddAssetRequest, CoinsHistoryRequest, OrderLookup, OrderRequest, PortfolioRequest,
    RemoveAssetRequest,
};
use agora_nats::files::wire::{ListFilesRequest, StatRequest};
use agora_nats::likes::wire::{LikeRequest, TopRequest};
use agora_nats::tasks::wire::{ListRequest, SubmitRequest, TaskIdRequest};

/// Builds the JSON schema of one type (a `$ref` into `components.schemas`).
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a successful reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The service's JSON reply.
    Json,
    /// A Server-Sent Events stream.
    EventStream,
    /// A file's bytes.
    Bytes,
}

/// One route: what it is, and how to build its handler.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    /// The path in axum's syntax (`{account}`, `{*name}` for the rest of the path).
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// The type whose fields the path and query parameters are (each parameter's schema is
    /// its field's; a field that is not in the path is an optional query parameter unless the
    /// type requires it).
    pub fields: Option<SchemaOf>,
    /// Query parameters the route reads (fields of `fields`).
    pub query: &'static [&'static str],
    /// The JSON body's type, for routes that take one.
    pub body: Option<SchemaOf>,
    pub reply: Reply,
    pub handler: fn() -> MethodRouter<State>,
}

macro_rules! route {
    ($method:literal, $path:literal, $tag:literal, $summary:literal, $fields:expr,
     [$($query:literal),*], $body:expr, $handler:expr $(, $reply:expr)?) => {
        Route {
            method: $method,
            path: $path,
            tag: $tag,
            summary: $summary,
            fields: $fields,
            query: &[$($query),*],
            body: $body,
            reply: route!(@reply $($reply)?),
            handler: || $handler,
        }
    };
    (@reply) => { Reply::Json };
    (@reply $reply:expr) => { $reply };
}

/// The whole HTTP API.
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/health",
        "system",
        "Liveness, and whether NATS is connected",
        None,
        [],
        None,
        get(api::health)
    ),
    route!(
        "GET",
        "/api/openapi.json",
        "system",
        "This document",
        None,
        [],
        None,
        get(api::openapi)
    ),
    route!(
        "GET",
        "/api/services",
        "system",
        "Every live service instance ($SRV.PING and $SRV.STATS), at most a second old",
        None,
        [],
        None,
        get(api::services)
    ),
    route!(
        "GET",
        "/api/logs",
        "system",
        "Recent log records of every component, newest last",
        Some(schema::<LogsQuery>),
        ["service", "level", "limit"],
        None,
        get(api::logs)
    ),
    route!(
        "GET",
        "/api/events",
        "system",
        "Server-Sent Events: bank, chat, presence, tasks, likes, prices, logs (topics=a,b; \
         session=<chat session> adds its direct messages)",
        Some(schema::<EventsQuery>),
        ["topics", "session"],
        None,
        get(live::events),
        Reply::EventStream
    ),
    // Bank.
    route!(
        "GET",
        "/api/bank/balance/{account}",
        "bank",
        "An account's balance",
        Some(schema::<BalanceRequest>),
        [],
        None,
        get(api::balance)
    ),
    route!(
        "POST",
        "/api/bank/deposit",
        "bank",
        "Deposit",
        None,
        [],
        Some(schema::<AmountRequest>),
        post(api::deposit)
    ),
    route!(
        "POST",
        "/api/bank/withdraw",
        "bank",
        "Withdraw",
        None,
        [],
        Some(schema::<AmountRequest>),
        post(api::withdraw)
    ),
    route!(
        "POST",
        "/api/bank/transfer",
        "bank",
        "Transfer between two accounts",
        None,
        [],
        Some(schema::<TransferRequest>),
        post(api::transfer)
    ),
    // The original business server's routes (an Idempotency-Key header sets the op id).
    route!(
        "POST",
        "/deposit/{account}/{amount}",
        "legacy",
        "Deposit (original route)",
        Some(schema::<AmountRequest>),
        [],
        None,
        post(api::legacy_deposit)
    ),
    route!(
        "POST",
        "/withdrawal/{account}/{amount}",
        "legacy",
        "Withdraw (original route)",
        Some(schema::<AmountRequest>),
        [],
        None,
        post(api::legacy_withdraw)
    ),
    route!(
        "GET",
        "/balance/{account}",
        "legacy",
        "Balance (original route)",
        Some(schema::<BalanceRequest>),
        [],
        None,
        get(api::legacy_balance)
    ),
    route!(
        "POST",
        "/transfer/{from}/{to}/{amount}",
        "legacy",
        "Transfer (original route)",
        Some(schema::<TransferRequest>),
        [],
        None,
        post(api::legacy_transfer)
    ),
    // Coins.
    route!(
        "GET",
        "/api/coins/assets",
        "coins",
        "Listed assets (all, or symbols=A,B)",
        Some(schema::<AssetsQuery>),
        ["symbols"],
        None,
        get(api::coin_assets)
    ),
    route!(
        "POST",
        "/api/coins/buy",
        "coins",
        "Buy units with bank money",
        None,
        [],
        Some(schema::<OrderRequest>),
        post(api::buy)
    ),
    route!(
        "POST",
        "/api/coins/sell",
        "coins",
        "Sell units for bank money",
        None,
        [],
        Some(schema::<OrderRequest>),
        post(api::sell)
    ),
    route!(
        "GET",
        "/api/coins/orders/{user}/{id}",
        "coins",
        "One order's state",
        Some(schema::<OrderLookup>),
        [],
        None,
        get(api::coin_order)
    ),
    route!(
        "GET",
        "/api/coins/portfolio/{user}",
        "coins",
        "Holdings and bank balance",
        Some(schema::<PortfolioRequest>),
        [],
        None,
        get(api::portfolio)
    ),
    route!(
        "GET",
        "/api/coins/history",
        "coins",
        "Done orders, newest first",
        Some(schema::<CoinsHistoryRequest>),
        ["user", "from", "to", "limit"],
        None,
        get(api::coin_history)
    ),
    route!(
        "POST",
        "/api/coins/admin/assets",
        "coins-manager",
        "List an asset (Authorization: Bearer <manager token>)",
        None,
        [],
        Some(schema::<AddAssetRequest>),
        post(api::add_asset)
    ),
    route!(
        "PATCH",
        "/api/coins/admin/assets/{symbol}",
        "coins-manager",
        "Reprice or restock an asset (manager)",
        Some(schema::<RemoveAssetRequest>),
        [],
        Some(schema::<AssetChange>),
        patch(api::update_asset)
    ),
    route!(
        "DELETE",
        "/api/coins/admin/assets/{symbol}",
        "coins-manager",
        "Delist an asset nobody holds (manager)",
        Some(schema::<RemoveAssetRequest>),
        [],
        None,
        delete(api::remove_asset)
    ),
    // Tasks.
    route!(
        "POST",
        "/api/tasks",
        "tasks",
        "Submit a task",
        None,
        [],
        Some(schema::<SubmitRequest>),
        post(api::submit_task)
    ),
    route!(
        "GET",
        "/api/tasks",
        "tasks",
        "Tasks, newest first",
        Some(schema::<ListRequest>),
        ["state", "op", "limit", "before", "dead_letter"],
        None,
        get(api::list_tasks)
    ),
    route!(
        "GET",
        "/api/tasks/{id}",
        "tasks",
        "One task with its history",
        Some(schema::<TaskIdRequest>),
        [],
        None,
        get(api::task)
    ),
    route!(
        "POST",
        "/api/tasks/{id}/cancel",
        "tasks",
        "Cancel a task",
        Some(schema::<TaskIdRequest>),
        [],
        None,
        post(api::cancel_task)
    ),
    route!(
        "GET",
        "/api/workers",
        "tasks",
        "Every live worker's status",
        None,
        [],
        None,
        get(api::workers)
    ),
    // Chat.
    route!(
        "POST",
        "/api/chat/sessions",
        "chat",
        "Register a name: the gateway holds the session while it is used",
        None,
        [],
        Some(schema::<OpenRequest>),
        post(chat::open)
    ),
    route!(
        "DELETE",
        "/api/chat/sessions/{session}",
        "chat",
        "Go offline now",
        Some(schema::<SessionRequest>),
        [],
        None,
        delete(chat::close)
    ),
    route!(
        "POST",
        "/api/chat/send",
        "chat",
        "Say something in a room, or to one user; answers once it is in history",
        None,
        [],
        Some(schema::<SendRequest>),
        post(chat::send)
    ),
    route!(
        "POST",
        "/api/chat/join",
        "chat",
        "Join a room",
        None,
        [],
        Some(schema::<RoomChange>),
        post(chat::join)
    ),
    route!(
        "POST",
        "/api/chat/part",
        "chat",
        "Leave a room",
        None,
        [],
        Some(schema::<RoomChange>),
        post(chat::part)
    ),
    route!(
        "GET",
        "/api/chat/who",
        "chat",
        "Who is online (room=, offline=true)",
        Some(schema::<WhoRequest>),
        ["room", "offline"],
        None,
        get(chat::who)
    ),
    route!(
        "GET",
        "/api/chat/history",
        "chat",
        "History of a room, of a direct conversation (with + as), or of what a user could see",
        Some(schema::<HistoryRequest>),
        ["room", "with", "as", "before", "after", "limit"],
        None,
        get(chat::history)
    ),
    // Likes.
    route!(
        "GET",
        "/api/likes/top",
        "likes",
        "The most-liked items",
        Some(schema::<TopRequest>),
        ["limit"],
        None,
        get(api::top_likes)
    ),
    route!(
        "GET",
        "/api/likes/nodes",
        "likes",
        "The likes nodes and the current leader",
        None,
        [],
        None,
        get(api::like_nodes)
    ),
    route!(
        "GET",
        "/api/likes/items/{item}",
        "likes",
        "An item's count (user= says if liked)",
        Some(schema::<ItemUser>),
        ["user"],
        None,
        get(api::like_count)
    ),
    route!(
        "POST",
        "/api/likes/items/{item}/like",
        "likes",
        "Like an item",
        Some(schema::<ItemPath>),
        [],
        Some(schema::<LikeRequest>),
        post(api::like)
    ),
    route!(
        "POST",
        "/api/likes/items/{item}/unlike",
        "likes",
        "Take a user's like back",
        Some(schema::<ItemPath>),
        [],
        Some(schema::<LikeRequest>),
        post(api::unlike)
    ),
    // Files.
    route!(
        "GET",
        "/api/files",
        "files",
        "List files",
        Some(schema::<ListFilesRequest>),
        ["prefix", "limit"],
        None,
        get(api::list_files)
    ),
    route!(
        "GET",
        "/api/files/stat/{*name}",
        "files",
        "A file's size, digest and chunks",
        Some(schema::<StatRequest>),
        [],
        None,
        get(api::file_stat)
    ),
    route!(
        "GET",
        "/api/files/content/{*name}",
        "files",
        "Download (streamed; Range, If-None-Match and HEAD supported)",
        Some(schema::<ContentPath>),
        ["download"],
        None,
        get(files::content),
        Reply::Bytes
    ),
    route!(
        "GET",
        "/api/files/cache",
        "files",
        "The answering file server's cache",
        None,
        [],
        None,
        get(api::file_cache)
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

/// The parameters of a download: the file's name, and `download=1`.
#[derive(Debug, schemars::JsonSchema)]
#[allow(dead_code)] // a schema only: the handler reads the name and `ContentQuery`
struct ContentPath {
    #[schemars(length(min = 1, max = 1024))]
    name: String,
    #[serde(flatten)]
    query: ContentQuery,
}

/// The gateway's router: [`ROUTES`], the dashboard, and JSON errors for unknown routes.
pub fn router(state: State) -> Router {
    let body_bytes_max = state.config.body_bytes_max;
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// The generator of every schema in the document: JSON Schema 2020-12 (OpenAPI 3.1's
/// dialect), named types under `#/components/schemas`.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator()
}

/// A schema with its `$ref` (if it is one) looked up in the generator's definitions.
fn resolved(generator: &SchemaGenerator, schema: Schema) -> Value {
    let value = schema.to_value();
    let Some(name) = value["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/"))
    else {
        return value;
    };
    generator.definitions().get(name).cloned().unwrap_or(value)
}

/// A parameter's schema: its field's, without `null` (a parameter is there or not).
fn parameter_schema(field: &Value) -> Value {
    let mut schema = field.clone();
    if let Some(types) = schema["type"].as_array() {
        let types: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        schema["type"] = if types.len() == 1 { types[0].clone() } else { Value::Array(types) };
    }
    if let Some(any_of) = schema["anyOf"].as_array() {
        let kept: Vec<Value> =
            any_of.iter().filter(|s| s["type"] != "null").cloned().collect::<Vec<_>>();
        if kept.len() == 1 {
            let mut only = kept[0].clone();
            if let (Some(only), Some(outer)) = (only.as_object_mut(), schema.as_object()) {
                for (key, value) in outer {
                    if key != "anyOf" {
                        only.insert(key.clone(), value.clone());
                    }
                }
            }
            schema = only;
        }
    }
    schema
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut generator = generator();
    let mut paths = Map::new();
    for route in ROUTES {
        let path = route.path.replace("{*", "{");
        let fields = route.fields.map(|fields| {
            let schema = fields(&mut generator);
            resolved(&generator, schema)
        });
        let property = |name: &str| {
            fields.as_ref().and_then(|f| f["properties"].get(name)).map(parameter_schema)
        };
        let required = |name: &str| {
            fields
                .as_ref()
                .and_then(|f| f["required"].as_array())
                .is_some_and(|r| r.contains(&json!(name)))
        };
        let mut parameters: Vec<Value> = path_parameters(&path)
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": property(name).unwrap_or_else(|| json!({"type": "string"}))})
            })
            .collect();
        parameters.extend(route.query.iter().map(|name| {
            json!({"name": name, "in": "query", "required": required(name),
                   "schema": property(name).unwrap_or_else(|| json!({"type": "string"}))})
        }));
        let content = match route.reply {
            Reply::Json => json!({"application/json": {"schema": {"type": "object"}}}),
            Reply::EventStream => json!({"text/event-stream": {"schema": {"type": "string"}}}),
            Reply::Bytes => json!({"application/octet-stream":
                                       {"schema": {"type": "string", "format": "binary"}}}),
        };
        let mut operation = json!({
            "tags": [route.tag],
            "summary": route.summary,
            "operationId": format!("{} {}", route.method, route.path),
            "parameters": parameters,
            "responses": {
                "200": {"description": "The service's reply", "content": content},
                "default": {"description": "A coded error",
                            "content": {"application/json":
                                {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": body(&mut generator).to_value()}}
            });
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".to_owned(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
            }}
        }),
    );
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Agora gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agora's HTTP API. Every error is {\"error\":{\"code\",\"message\"}} \
                with the code's status: 400 invalid_request, 401 not_registered, 403 forbidden, \
                404 not_found, 409 insufficient_funds / insufficient_quantity / name_taken / \
                conflict, 429 busy / rate_limited, 503 unavailable."
        },
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

/// The `{name}` parameters of an OpenAPI path.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_once() {
        let document = openapi();
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method, route.path)),
                "{} {} twice",
                route.method,
                route.path
            );
            let path = route.path.replace("{*", "{");
            let operation = &document["paths"][&path][route.method.to_ascii_lowercase()];
            assert_eq!(operation["summary"], route.summary);
            for name in path_parameters(&path) {
                assert!(
                    operation["parameters"]
                        .as_array()
                        .expect("parameters")
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{path} documents {name}"
                );
            }
        }
        let documented: usize = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|operations| operations.as_object().expect("operations").len())
            .sum();
        assert_eq!(documented, ROUTES.len());
    }
}
