//! The OpenAPI 3.1 document of the JSON API, served at `/api/openapi.json`,
//! printed by `sightline openapi` and committed as `docs/openapi.json` (a test
//! keeps the three equal).
//!
//! Each operation comes from its handler's `#[utoipa::path]` and the types it
//! takes and answers with; this module adds what every operation shares, from
//! the layers and extractors they all pass through rather than from each
//! handler: `X-Request-Id` on every answer, the error answers of
//! authentication, JSON bodies, query and path parameters, CSRF, limits and an
//! unavailable dependency (each with `Retry-After` where the server sends it),
//! the security schemes, the event stream's per-event schemas, and the links
//! that lead from a placed order to its reads and its cancellation.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, Required,
    Response, ResponseBuilder, Type,
};

use crate::api::sessions::PASSWORD_PATH;
use crate::extract::session::SECURE_COOKIE_NAME;
use crate::schemas::{ErrorBody, FieldError, ReadSourceHeader};

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
    security(()),
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sightline",
        version = "1",
        description = "Orders committed with an outbox, projected into Elasticsearch, and `order-visible` pushed over Server-Sent Events once search can find them. HTTP contract v1: see docs/HTTP.md, and *Resuming the event stream* in docs/ARCHITECTURE.md.",
    ),
    paths(
        crate::api::sessions::sign_up,
        crate::api::sessions::log_in,
        crate::api::sessions::log_out,
        crate::api::sessions::change_password,
        crate::api::orders::create_order,
        crate::api::orders::cancel,
        crate::api::orders::list_orders,
        crate::api::orders::get_order,
        crate::api::orders::get_summary,
        crate::api::visibility::visibility,
        crate::api::journey::journey,
        crate::api::events::events,
        crate::health::healthz,
        crate::health::readyz,
        serve,
    ),
    components(schemas(
        ErrorBody,
        FieldError,
        ReadSourceHeader,
        sightline_core::visibility::sse_data::ReadyData,
        sightline_core::visibility::sse_data::ResetData,
        sightline_core::visibility::sse_data::SessionEndReason,
        sightline_core::visibility::sse_data::SessionEndedData,
        sightline_core::visibility::sse_data::OrderVisibleData,
        sightline_core::visibility::sse_data::OrderFailedData,
    )),
    modifiers(&Contract),
)]
struct ApiDoc;

/// The document as pretty JSON (built once).
pub fn json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc =
            serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
        order_links(&mut doc);
        let mut text = serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises");
        text.push('\n');
        text
    })
    .clone()
}

const SECURITY_COOKIE: &str = "session_cookie";
const SECURITY_BEARER: &str = "bearer";

/// What every operation shares (see the module comment).
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SECURE_COOKIE_NAME,
                "The session cookie set by `POST /api/sessions` (`__Host-sightline_session`; `sightline_session` when `COOKIE_SECURE=false`). State changes made with it must be same-origin or from `CORS_ALLOWED_ORIGINS`.",
            ))),
        );
        components.add_security_scheme(
            SECURITY_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `token` of `POST /api/sessions`."))
                    .build(),
            ),
        );
        let signed_in = vec![
            utoipa::openapi::security::SecurityRequirement::new(
                SECURITY_COOKIE,
                Vec::<String>::new(),
            ),
            utoipa::openapi::security::SecurityRequirement::new(
                SECURITY_BEARER,
                Vec::<String>::new(),
            ),
        ];
        doc.security = Some(signed_in);

        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ] {
                if let Some(operation) = operation {
                    shared_answers(path, method, operation);
                }
            }
        }
        events_schemas(doc);
    }
}

fn error_response(description: &str, retry_after: bool) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry_after {
        response = response.header("Retry-After", retry_after_header());
    }
    response.build()
}

fn retry_after_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some("Seconds to wait before trying again."))
        .build()
}

fn add(operation: &mut Operation, status: &str, response: Response) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert(RefOr::T(response));
}

fn shared_answers(path: &str, method: HttpMethod, operation: &mut Operation) {
    // An empty requirement (`security(())`) marks a public operation; the
    // others inherit the document's: cookie or bearer.
    let public = operation.security.is_some();
    let has_body = operation.request_body.is_some();
    let params = operation.parameters.as_deref().unwrap_or_default();
    let has_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
    let has_path = params
        .iter()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path));
    let changes_state = matches!(method, HttpMethod::Post | HttpMethod::Delete);

    if let Some(body) = operation.request_body.as_mut() {
        require_json(body);
    }
    if has_body {
        add(
            operation,
            "400",
            error_response("`malformed_json`: the body is not JSON.", false),
        );
        add(
            operation,
            "408",
            error_response(
                "`body_timeout`: the body was not sent within `BODY_TIMEOUT_SECS`; the connection is closed.",
                false,
            ),
        );
        add(
            operation,
            "413",
            error_response("`payload_too_large`: the body is over 64 KiB.", false),
        );
        add(
            operation,
            "415",
            error_response(
                "`unsupported_media_type`: `Content-Type` is not `application/json`.",
                false,
            ),
        );
        add(
            operation,
            "422",
            error_response(
                "`invalid_shape`: JSON of the wrong shape (including unknown fields); or `invalid` with `field` (and `errors`): a rule broken.",
                false,
            ),
        );
    }
    if has_query {
        add(
            operation,
            "400",
            error_response(
                "`bad_query` / `bad_cursor`: a query parameter out of range or malformed.",
                false,
            ),
        );
    }
    if has_path {
        add(
            operation,
            "404",
            error_response(
                "`not_found`: a malformed id names nothing, and an unknown or another user's order is not shown.",
                false,
            ),
        );
    }
    if !public {
        add(
            operation,
            "401",
            error_response("`unauthorized`: no session, or it expired.", false),
        );
        if changes_state {
            add(
                operation,
                "403",
                error_response(
                    "`forbidden`: a cookie-authenticated state change marked cross-site (`Sec-Fetch-Site`, `Origin`) from an origin not in `CORS_ALLOWED_ORIGINS`.",
                    false,
                ),
            );
        }
    }
    // Where a password is checked or hashed: throttled, and bound by hashing.
    let hashes = path == "/api/users"
        || path == "/api/sessions" && method == HttpMethod::Post
        || path == PASSWORD_PATH;
    if hashes {
        add(
            operation,
            "429",
            error_response(
                "`throttled`: too many login or sign-up attempts (see docs/SECURITY.md).",
                true,
            ),
        );
    }
    if path != "/healthz" && path != "/api/openapi.json" {
        let mut busy = String::new();
        if hashes {
            busy.push_str(" `busy`: password hashing is at its bound (`HASH_CONCURRENCY`).");
        }
        if !matches!(
            method,
            HttpMethod::Get | HttpMethod::Head | HttpMethod::Options
        ) {
            busy.push_str(
                " `busy`: the instance has as many writes in hand and waiting as it takes (`WRITE_CONCURRENCY`, `WRITE_QUEUE`, `WRITE_QUEUE_WAIT_MS`); nothing was written, retry after `Retry-After` (an order with the same `id`).",
            );
        }
        add(
            operation,
            "503",
            error_response(
                &format!("`unavailable`: a dependency the request needs is down.{busy}"),
                true,
            ),
        );
    }

    // A client may name its request in the logs.
    operation.parameters.get_or_insert_with(Vec::new).push(
        utoipa::openapi::path::ParameterBuilder::new()
            .name("X-Request-Id")
            .parameter_in(utoipa::openapi::path::ParameterIn::Header)
            .required(Required::False)
            .description(Some("Your id for this request, kept (and echoed) if it is 1–64 of `A-Z a-z 0-9 - _ . :`; any other value is replaced by a fresh UUID, never refused."))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build(),
    );

    for response in operation.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        response.headers.insert(
            "X-Request-Id".to_owned(),
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(64)))
                .description(Some("The request's id: the client's own if it sent a valid one (1–64 of `A-Z a-z 0-9 - _ . :`), else a fresh UUID. Every log line of the request carries it."))
                .build(),
        );
    }
    // 429s always say when to come back.
    for status in ["429", "503"] {
        if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) {
            response
                .headers
                .entry("Retry-After".to_owned())
                .or_insert_with(retry_after_header);
        }
    }
}

fn require_json(body: &mut RequestBody) {
    body.required = Some(Required::True);
}

/// The per-event `data` schemas of `GET /api/events`, where OpenAPI 3.1 has
/// no place for them: an `x-sse-events` extension of its 200 answer maps each
/// event name to the schema of its `data`.
fn events_schemas(doc: &mut Document) {
    let Some(item) = doc.paths.paths.get_mut("/api/events") else {
        return;
    };
    let Some(operation) = item.get.as_mut() else {
        return;
    };
    let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") else {
        return;
    };
    let reference =
        |name: &str| serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
    ok.extensions = Some(
        ExtensionsBuilder::new()
            .add(
                "x-sse-events",
                serde_json::json!({
                    "ready": reference("ReadyData"),
                    "reset": reference("ResetData"),
                    "order-visible": reference("OrderVisibleData"),
                    "order-failed": reference("OrderFailedData"),
                    "session-ended": reference("SessionEndedData"),
                }),
            )
            .build(),
    );
}

/// Links from a placed order to what a client does next with it, which
/// Schemathesis follows in its stateful phase. Added to the JSON: utoipa 5
/// writes a link's `operationId` as `operation_id`.
fn order_links(doc: &mut serde_json::Value) {
    let links = serde_json::json!({
        "GetOrder": {
            "operationId": "getOrder",
            "parameters": { "id": "$response.body#/id" },
            "description": "Read the order back (its `Location`)."
        },
        "GetVisibility": {
            "operationId": "getVisibility",
            "parameters": { "id": "$response.body#/id" },
            "description": "Ask whether search shows it yet."
        },
        "CancelOrder": {
            "operationId": "cancelOrder",
            "parameters": { "id": "$response.body#/id" },
            "description": "Cancel it."
        }
    });
    for status in ["200", "201"] {
        if let Some(response) =
            doc.pointer_mut(&format!("/paths/~1api~1orders/post/responses/{status}"))
        {
            response["links"] = links.clone();
        }
    }
    let cancelled = serde_json::json!({
        "GetVisibility": {
            "operationId": "getVisibility",
            "parameters": { "id": "$response.body#/id", "version": "$response.body#/version" },
            "description": "Wait for the cancellation to reach search (`wait` with this `version`)."
        },
        "GetOrder": {
            "operationId": "getOrder",
            "parameters": { "id": "$response.body#/id" },
            "description": "Read the cancelled order back."
        }
    });
    if let Some(response) = doc.pointer_mut("/paths/~1api~1orders~1{id}~1cancel/post/responses/200")
    {
        response["links"] = cancelled;
    }
}
