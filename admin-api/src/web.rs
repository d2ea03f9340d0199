//! The browser pages: the agent desk (`/desk/`) and the applicant page (`/kiosk/`), plain ES
//! modules embedded in the binary at compile time (`admin-api/web/`, with MQTT.js's bundle
//! vendored by `scripts/web-vendor`), so a new install serves them with nothing else installed
//! and nothing fetched at run time. `/web/config.json` tells a page where the MQTT WebSocket
//! listener is; `/` is a landing page linking both. Every page and asset carries a
//! Content-Security-Policy that allows only this origin's scripts and styles and MQTT over
//! WebSocket, and the usual hardening headers.

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use crate::AdminState;

/// Where browsers reach MQTT over WebSocket.
#[derive(Clone, Debug, Serialize)]
pub struct WebSettings {
    /// A full URL (`admin.mqtt_websocket_url`), for a listener behind a proxy or on another
    /// host; none: the page's own host with `mqtt_port` and `mqtt_path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_url: Option<String>,
    pub mqtt_port: u16,
    pub mqtt_path: String,
    /// Seconds a kiosk's finished conversation stays on screen before it resets for the next
    /// person.
    pub kiosk_reset_secs: u64,
    /// Seconds without input before a kiosk asks "Are you still there?".
    pub kiosk_idle_secs: u64,
    /// Seconds the question waits for an answer before the kiosk clears everything.
    pub kiosk_idle_warning_secs: u64,
    /// Whether the desk offers a username and password (`admin.password_sign_in`).
    pub password_sign_in: bool,
    /// Whether the desk offers sign-in with the court's identity provider (`/v1/oidc/login`).
    pub provider_sign_in: bool,
}

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("desk/index.html", HTML),
    asset!("desk/desk.js", JS),
    asset!("desk/state.js", JS),
    asset!("desk/availability.js", JS),
    asset!("desk/entries.js", JS),
    asset!("desk/lock.js", JS),
    asset!("desk/typing-presence.js", JS),
    asset!("desk/receipts.js", JS),
    asset!("desk/notifications.js", JS),
    asset!("desk/provider-sign-in.js", JS),
    asset!("desk/desk.css", CSS),
    asset!("kiosk/index.html", HTML),
    asset!("kiosk/kiosk.js", JS),
    asset!("kiosk/applicant-text.js", JS),
    asset!("kiosk/bubbles.js", JS),
    asset!("kiosk/enrolment.js", JS),
    asset!("kiosk/idle.js", JS),
    asset!("kiosk/renewal.js", JS),
    asset!("kiosk/kiosk.css", CSS),
    asset!("shared/courtchat.js", JS),
    asset!("shared/base.css", CSS),
    asset!("vendor/mqtt.esm.js", JS),
];

/// Scripts and styles from this origin only (no inline code, no eval), MQTT over WebSocket to
/// any host (the listener is another port, or another host behind a proxy, so not `'self'`),
/// no framing, no plugins. Workers may come from `blob:` URLs: MQTT.js runs its keepalive
/// timer in one, because a background tab throttles the page's own timers (to once a minute
/// after a while) and the gateway would drop a desk whose pings come late.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(crate) fn hardened(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
        // Pages change with the server's version; the browser asks again each time.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn serve(path: &str) -> Response {
    let found = ASSETS.iter().find(|asset| asset.path == path);
    let response = match found {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response(),
        None => crate::problem::Problem::new(StatusCode::NOT_FOUND, "not-found", "no such page")
            .into_response(),
    };
    hardened(response)
}

/// `GET /`: the landing page, linking the applicant page and the desk.
pub async fn home() -> Response {
    serve("index.html")
}

/// `GET /desk/`.
pub async fn desk() -> Response {
    serve("desk/index.html")
}

/// `GET /kiosk/`.
pub async fn kiosk() -> Response {
    serve("kiosk/index.html")
}

/// `GET /desk/{file}`, `/kiosk/{file}`: the page's scripts and styles.
pub async fn desk_file(Path(file): Path<String>) -> Response {
    serve(&format!("desk/{file}"))
}

pub async fn kiosk_file(Path(file): Path<String>) -> Response {
    serve(&format!("kiosk/{file}"))
}

/// `GET /web/{*path}`: what both pages share.
pub async fn shared(Path(path): Path<String>) -> Response {
    serve(&path)
}

/// `GET /web/config.json`.
pub async fn config(State(state): State<AdminState>) -> Response {
    hardened(axum::Json(state.web.as_ref().clone()).into_response())
}

/// `/desk` and `/kiosk` without the slash: the pages' relative links need it.
pub async fn to_desk() -> Redirect {
    Redirect::permanent("/desk/")
}

pub async fn to_kiosk() -> Redirect {
    Redirect::permanent("/kiosk/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_asset_is_served_hardened_and_nothing_else_is() {
        for asset in ASSETS {
            let response = serve(asset.path);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let expected = match asset.path.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                _ => CSS,
            };
            assert_eq!(headers[header::CONTENT_TYPE], expected, "{}", asset.path);
        }
        for missing in ["desk/../Cargo.toml", "vendor/mqtt.LICENSE.md", "nothing.js"] {
            assert_eq!(serve(missing).status(), StatusCode::NOT_FOUND, "{missing}");
        }
    }
}
