//! Every HTTP route of the gateway in one table. The router and the OpenAPI document are both
//! built from [`ROUTES`], so `/api/openapi.json` always matches what the gateway serves.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, patch, post};
use serde_json::{Map, Value, json};

use super::{State, api, assets, chat, files, live};

/// One route: what it is, and how to build its handler.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    /// The path in axum's syntax (`{account}`, `{*name}` for the rest of the path).
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Query parameters the route reads.
    pub query: &'static [&'static str],
    /// What the JSON body holds, for routes that take one.
    pub body: Option<&'static str>,
    pub handler: fn() -> MethodRouter<State>,
}

macro_rules! route {
    ($method:literal, $path:literal, $tag:literal, $summary:literal, [$($query:literal),*],
     $body:expr, $handler:expr) => {
        Route {
            method: $method,
            path: $path,
            tag: $tag,
            summary: $summary,
            query: &[$($query),*],
            body: $body,
            handler: || $handler,
        }
    };
}

/// The whole HTTP API.
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/health",
        "system",
        "Liveness, and whether NATS is connected",
        [],
        None,
        get(api::health)
    ),
    route!("GET", "/api/openapi.json", "system", "This document", [], None, get(api::openapi)),
    route!(
        "GET",
        "/api/services",
        "system",
        "Every live service instance ($SRV.PING and $SRV.STATS), at most a second old",
        [],
        None,
        get(api::services)
    ),
    route!(
        "GET",
        "/api/logs",
        "system",
        "Recent log records of every component, newest last",
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
        ["topics", "session"],
        None,
        get(live::events)
    ),
    // Bank.
    route!(
        "GET",
        "/api/bank/balance/{account}",
        "bank",
        "An account's balance",
        [],
        None,
        get(api::balance)
    ),
    route!(
        "POST",
        "/api/bank/deposit",
        "bank",
        "Deposit",
        [],
        Some(r#"{"account","amount","id"?}"#),
        post(api::deposit)
    ),
    route!(
        "POST",
        "/api/bank/withdraw",
        "bank",
        "Withdraw",
        [],
        Some(r#"{"account","amount","id"?}"#),
        post(api::withdraw)
    ),
    route!(
        "POST",
        "/api/bank/transfer",
        "bank",
        "Transfer between two accounts",
        [],
        Some(r#"{"from","to","amount","id"?}"#),
        post(api::transfer)
    ),
    // The original business server's routes (an Idempotency-Key header sets the op id).
    route!(
        "POST",
        "/deposit/{account}/{amount}",
        "legacy",
        "Deposit (original route)",
        [],
        None,
        post(api::legacy_deposit)
    ),
    route!(
        "POST",
        "/withdrawal/{account}/{amount}",
        "legacy",
        "Withdraw (original route)",
        [],
        None,
        post(api::legacy_withdraw)
    ),
    route!(
        "GET",
        "/balance/{account}",
        "legacy",
        "Balance (original route)",
        [],
        None,
        get(api::legacy_balance)
    ),
    route!(
        "POST",
        "/transfer/{from}/{to}/{amount}",
        "legacy",
        "Transfer (original route)",
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
        ["symbols"],
        None,
        get(api::coin_assets)
    ),
    route!(
        "POST",
        "/api/coins/buy",
        "coins",
        "Buy units with bank money",
        [],
        Some(r#"{"user","symbol","quantity","id"?}"#),
        post(api::buy)
    ),
    route!(
        "POST",
        "/api/coins/sell",
        "coins",
        "Sell units for bank money",
        [],
        Some(r#"{"user","symbol","quantity","id"?}"#),
        post(api::sell)
    ),
    route!(
        "GET",
        "/api/coins/orders/{user}/{id}",
        "coins",
        "One order's state",
        [],
        None,
        get(api::coin_order)
    ),
    route!(
        "GET",
        "/api/coins/portfolio/{user}",
        "coins",
        "Holdings and bank balance",
        [],
        None,
        get(api::portfolio)
    ),
    route!(
        "GET",
        "/api/coins/history",
        "coins",
        "Done orders, newest first",
        ["user", "from", "to", "limit"],
        None,
        get(api::coin_history)
    ),
    route!(
        "POST",
        "/api/coins/admin/assets",
        "coins-manager",
        "List an asset (Authorization: Bearer <manager token>)",
        [],
        Some(r#"{"symbol","name","price","quantity"}"#),
        post(api::add_asset)
    ),
    route!(
        "PATCH",
        "/api/coins/admin/assets/{symbol}",
        "coins-manager",
        "Reprice or restock an asset (manager)",
        [],
        Some(r#"{"price"?,"quantity"?}"#),
        patch(api::update_asset)
    ),
    route!(
        "DELETE",
        "/api/coins/admin/assets/{symbol}",
        "coins-manager",
        "Delist an asset nobody holds (manager)",
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
        [],
        Some(r#"{"op","args"?,"id"?,"priority"?,"wait_ms"?}"#),
        post(api::submit_task)
    ),
    route!(
        "GET",
        "/api/tasks",
        "tasks",
        "Tasks, newest first",
        ["state", "op", "limit", "before", "dead_letter"],
        None,
        get(api::list_tasks)
    ),
    route!(
        "GET",
        "/api/tasks/{id}",
        "tasks",
        "One task with its history",
        [],
        None,
        get(api::task)
    ),
    route!(
        "POST",
        "/api/tasks/{id}/cancel",
        "tasks",
        "Cancel a task",
        [],
        None,
        post(api::cancel_task)
    ),
    route!(
        "GET",
        "/api/workers",
        "tasks",
        "Every live worker's status",
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
        [],
        Some(r#"{"name"}"#),
        post(chat::open)
    ),
    route!(
        "DELETE",
        "/api/chat/sessions/{session}",
        "chat",
        "Go offline now",
        [],
        None,
        delete(chat::close)
    ),
    route!(
        "POST",
        "/api/chat/send",
        "chat",
        "Say something in a room, or to one user; answers once it is in history",
        [],
        Some(r#"{"session","room"|"to","text"}"#),
        post(chat::send)
    ),
    route!(
        "POST",
        "/api/chat/join",
        "chat",
        "Join a room",
        [],
        Some(r#"{"session","room"}"#),
        post(chat::join)
    ),
    route!(
        "POST",
        "/api/chat/part",
        "chat",
        "Leave a room",
        [],
        Some(r#"{"session","room"}"#),
        post(chat::part)
    ),
    route!(
        "GET",
        "/api/chat/who",
        "chat",
        "Who is online (room=, offline=true)",
        ["room", "offline"],
        None,
        get(chat::who)
    ),
    route!(
        "GET",
        "/api/chat/history",
        "chat",
        "History of a room, of a direct conversation (with + as), or of what a user could see",
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
        ["limit"],
        None,
        get(api::top_likes)
    ),
    route!(
        "GET",
        "/api/likes/nodes",
        "likes",
        "The likes nodes and the current leader",
        [],
        None,
        get(api::like_nodes)
    ),
    route!(
        "GET",
        "/api/likes/items/{item}",
        "likes",
        "An item's count (user= says if liked)",
        ["user"],
        None,
        get(api::like_count)
    ),
    route!(
        "POST",
        "/api/likes/items/{item}/like",
        "likes",
        "Like an item",
        [],
        Some(r#"{"user"?}"#),
        post(api::like)
    ),
    route!(
        "POST",
        "/api/likes/items/{item}/unlike",
        "likes",
        "Take a user's like back",
        [],
        Some(r#"{"user"}"#),
        post(api::unlike)
    ),
    // Files.
    route!(
        "GET",
        "/api/files",
        "files",
        "List files",
        ["prefix", "limit"],
        None,
        get(api::list_files)
    ),
    route!(
        "GET",
        "/api/files/stat/{*name}",
        "files",
        "A file's size, digest and chunks",
        [],
        None,
        get(api::file_stat)
    ),
    route!(
        "GET",
        "/api/files/content/{*name}",
        "files",
        "Download (streamed; Range, If-None-Match and HEAD supported)",
        ["download"],
        None,
        get(files::content)
    ),
    route!(
        "GET",
        "/api/files/cache",
        "files",
        "The answering file server's cache",
        [],
        None,
        get(api::file_cache)
    ),
];

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

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let path = route.path.replace("{*", "{");
        let mut parameters: Vec<Value> = path_parameters(&path)
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                               "schema": {"type": "string"}})
            })
            .collect();
        parameters.extend(route.query.iter().map(|name| {
            json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}})
        }));
        let mut operation = json!({
            "tags": [route.tag],
            "summary": route.summary,
            "operationId": format!("{} {}", route.method, route.path),
            "parameters": parameters,
            "responses": {
                "200": {"description": "The service's JSON reply",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "A coded error",
                            "content": {"application/json":
                                {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "description": body,
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Agora gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agora's HTTP API. Every error is {\"error\":{\"code\",\"message\"}} \
                with the code's status: 400 invalid_request, 401 not_registered, 403 forbidden, \
                404 not_found, 409 insufficient_funds / insufficient_quantity / name_taken / \
                conflict, 429 busy / rate_limited, 503 unavailable."
        },
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
            }}
        }}}
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
