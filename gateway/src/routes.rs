//! Every HTTP route of the gateway: each capability's module declares its own `ROUTES`, and
//! [`all`] is the whole API. The router and the OpenAPI document are both built from [`all`], so `/api/openapi.json` always matches what the gateway serves, and
//! every body and parameter schema is derived (schemars) from the type the handler parses.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::{
    State, assets, auth, bank, chat, coins, files, guard, http, likes, live, system, tasks,
};

/// Builds the JSON schema of one type (a `$ref` into `components.schemas`).
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

pub(crate) fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
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
    /// Prometheus metrics (OpenMetrics text).
    Metrics,
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
    /// The body is raw bytes (`application/octet-stream`: an upload), not JSON.
    pub bytes_body: bool,
    pub reply: Reply,
    pub handler: fn() -> MethodRouter<State>,
}

/// A [`Route`] (`Reply::Json` unless a reply is given last).
macro_rules! route {
    ($method:literal, $path:literal, $tag:literal, $summary:literal, $fields:expr,
     [$($query:literal),*], $body:expr, $handler:expr $(, $reply:expr)?) => {
        $crate::routes::Route {
            method: $method,
            path: $path,
            tag: $tag,
            summary: $summary,
            fields: $fields,
            query: &[$($query),*],
            body: $body,
            bytes_body: false,
            reply: route!(@reply $($reply)?),
            handler: || $handler,
        }
    };
    (@reply) => { $crate::routes::Reply::Json };
    (@reply $reply:expr) => { $reply };
}

/// The whole HTTP API: every capability's routes.
pub fn all() -> impl Iterator<Item = &'static Route> {
    [
        system::ROUTES,
        auth::ROUTES,
        live::ROUTES,
        bank::ROUTES,
        coins::ROUTES,
        tasks::ROUTES,
        chat::ROUTES,
        likes::ROUTES,
        files::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// Whether the route `path` (axum's syntax, as `MatchedPath` has it) takes raw bytes for
/// `method` (an upload) rather than JSON.
pub fn takes_bytes(method: &axum::http::Method, path: &str) -> bool {
    all().any(|route| route.bytes_body && route.path == path && route.method == method.as_str())
}

/// The gateway's router: [`all`], the dashboard, and JSON errors for unknown routes.
pub fn router(state: State) -> Router {
    let body_bytes_max = state.config.body_bytes_max;
    let body_timeout = std::time::Duration::from_millis(state.config.body_timeout_ms);
    let mut router = Router::new();
    for route in all() {
        router = router.route(route.path, (route.handler)());
    }
    router
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .fallback(http::no_route)
        .method_not_allowed_fallback(http::wrong_method)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(axum::middleware::from_fn(system::meter))
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

/// The OpenAPI 3.1 document of [`all`].
pub fn openapi() -> Value {
    let mut generator = generator();
    let mut paths = Map::new();
    for route in all() {
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
            Reply::Metrics => {
                json!({"application/openmetrics-text": {"schema": {"type": "string"}}})
            }
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
        if route.bytes_body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/octet-stream":
                                {"schema": {"type": "string", "format": "binary"}}}
            });
        }
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
        for route in all() {
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
        assert_eq!(documented, all().count());
    }
}
