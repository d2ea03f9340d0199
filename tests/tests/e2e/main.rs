//! End-to-end tests: the whole stack, started by `testkit`, driven through real clients.
//!
//! One test binary with a module per area, so the workspace links the stack once.

mod admin_audit;
mod admin_fuzz;
mod admin_kiosks;
mod admin_login;
mod admin_people;
mod admin_queue;
mod admin_sessions;
mod admin_stats;
mod api;
mod architecture;
mod audit_record;
mod auth;
mod bench_smoke;
mod chat;
mod closed_sessions;
mod config_example;
mod denials_bounded;
mod framing;
mod http;
mod metrics;
mod mqtt;
mod mqtt5;
mod mqttjs;
mod node;
mod pipeline;
mod presence;
mod restored_access;
mod retained;
mod retention;
mod revocation;
mod robustness;
mod signals;
mod staff;
mod staff_revocation;
mod storage;
mod tls;
mod web_conversation;
mod web_desk;
mod web_kiosk;
mod websocket_origin;
