//! The API's OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/v1/openapi.json`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "courtchat admin API",
        description = "Staff sign-in and the help desk's administration. Errors are RFC 9457 \
                       problem details whose `type` is stable.",
    ),
    paths(crate::login::login, crate::healthz, crate::readyz),
    components(schemas(crate::Problem, crate::login::LoginRequest, crate::login::LoginResponse, crate::Status)),
    tags(
        (name = "sign-in", description = "Tokens for staff"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
