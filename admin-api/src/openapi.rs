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
        crate::oidc_http::login,
        crate::oidc_http::callback,
        crate::oidc_http::session,
        crate::people_http::list,
        crate::people_http::create,
        crate::people_http::read,
        crate::people_http::update,
        crate::kiosks_http::list,
        crate::kiosks_http::enrol,
        crate::kiosks_http::read,
        crate::kiosks_http::revoke,
        crate::applicant_tokens::issue,
        crate::applicant_renewal::renew,
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
    modifiers(&Bearer, &SenderLimit),
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

/// Every operation may answer 429 with `Retry-After`: every route is limited per sender
/// (`sender_limits`), so the document says so once here rather than in each annotation (where
/// a new route could forget it). Operations that document a 429 of their own (sign-in, applicant
/// tokens, the pipeline's actions) keep their description and gain the header. Operations that
/// take a body may answer 408 when it does not arrive in time (`extract::ApiJson`).
struct SenderLimit;

impl utoipa::Modify for SenderLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Type};
        let retry_after = HeaderBuilder::new()
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .build(),
            ))
            .description(Some("seconds to wait before asking again"))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                let described = match responses.get("429") {
                    Some(RefOr::T(response)) => response.description.clone(),
                    _ => "too many requests from this sender; see Retry-After".to_owned(),
                };
                let response = ResponseBuilder::new()
                    .description(described)
                    .header("Retry-After", retry_after.clone())
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build();
                responses.insert("429".to_owned(), RefOr::T(response));
                if operation.request_body.is_some() {
                    let slow = ResponseBuilder::new()
                        .description(
                            "the body did not arrive within admin.request_read_timeout_secs",
                        )
                        .content(
                            "application/problem+json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build();
                    responses.insert("408".to_owned(), RefOr::T(slow));
                }
            }
        }
    }
}

/// `GET /v1/openapi.json`.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use utoipa::OpenApi;

    use super::ApiDoc;

    /// Every operation of the document, as (method, path, the operation as JSON).
    fn operations() -> Vec<(String, String, serde_json::Value)> {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                found.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        found
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut seen = HashSet::new();
        for (method, path, operation) in operations() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(
                seen.insert(id.clone()),
                "{method} {path}: operationId {id} repeats"
            );
        }
    }

    #[test]
    fn every_operation_answers_429_with_retry_after() {
        for (method, path, operation) in operations() {
            let too_many = &operation["responses"]["429"];
            assert!(
                too_many["headers"]["Retry-After"].is_object(),
                "{method} {path}: {too_many}"
            );
            assert_eq!(
                too_many["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path}"
            );
        }
    }
}
