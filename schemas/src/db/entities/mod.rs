//! One module per table. Enumerations are stored as short strings so that rows stay readable in
//! a court's export and the schema is the same on SQLite and PostgreSQL.

pub mod agent;
pub mod applicant_grant;
pub mod audit_event;
pub mod audit_head;
pub mod ended_token;
pub mod kiosk;
pub mod legal_hold;
pub mod message;
pub mod oidc_session;
pub mod participant;
pub mod receipt;
pub mod retention_policy;
pub mod session;
pub mod session_purge;
pub mod staff_identity;
pub mod submission_ack;
pub mod survey_response;
