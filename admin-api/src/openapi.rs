//! The API's OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/v1/openapi.json`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "courtchat admin API",
        description = "Staff sign-in, applicant tokens for kiosks and phones, and the help \
                       desk's administration. Errors are RFC 9457 problem details whose `type` \
                       is stable.",
    ),
    paths(
        crate::login::login,
        crate::logout::logout,
        crate::people_http::list,
        crate::people_http::create,
        crate::people_http::read,
        crate::people_http::update,
        crate::kiosks_http::list,
        crate::kiosks_http::enrol,
        crate::kiosks_http::read,
        crate::kiosks_http::revoke,
        crate::applicant_tokens::issue,
        crate::enrolment_check::check,
        crate::sessions_http::list,
        crate::sessions_http::transcript,
        crate::session_actions_http::assign,
        crate::session_actions_http::transfer,
        crate::session_actions_http::close,
        crate::retention_http::hold,
        crate::retention_http::release,
        crate::retention_http::list,
        crate::retention_http::create,
        crate::retention_http::update,
        crate::retention_http::delete,
        crate::queue_http::waiting,
        crate::queue_http::set_availability,
        crate::audit_http::query,
        crate::audit_http::export,
        crate::audit_http::verify,
        crate::stats_http::stats,
        crate::stats_http::export_csv,
        crate::stats_http::export_surveys,
        crate::healthz,
        crate::metrics::serve,
        crate::readyz,
    ),
    components(schemas(crate::Problem, crate::login::LoginRequest, crate::login::LoginResponse, crate::Status, crate::stats_http::SurveyLine)),
    modifiers(&Bearer),
    tags(
        (name = "sign-in", description = "Tokens for staff"),
        (name = "people", description = "Help-desk staff: agents, supervisors, admins"),
        (name = "kiosks", description = "Kiosks: enrolment, credentials, revocation"),
        (name = "applicants", description = "Applicant tokens for kiosks and the public phone page"),
        (name = "sessions", description = "Conversations: lists and transcripts"),
        (name = "queue", description = "Waiting sessions, availability, assign, transfer, close"),
        (name = "retention", description = "How long closed sessions' content is kept; legal holds"),
        (name = "audit", description = "The tamper-evident record: query, export, verify"),
        (name = "statistics", description = "Figures over a time range (JSON, CSV) and the survey answers' export"),
        (name = "health", description = "Liveness and readiness probes"),
    )
)]
pub struct ApiDoc;

/// The bearer schemes the `security` of each protected route names: `bearer`, the token from
/// `/v1/login`; `kiosk`, a kiosk's credential (`cck_…`), which only `/v1/applicant-tokens`
/// takes.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "kiosk",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cck_<kiosk id>_<secret>")
                    .build(),
            ),
        );
    }
}

/// `GET /v1/openapi.json`.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
