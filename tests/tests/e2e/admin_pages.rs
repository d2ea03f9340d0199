//! Finding the pages: `GET /` is a small landing page linking the applicant page and the desk,
//! served with the same Content-Security-Policy and headers as they are (it was a 404), and
//! the start-up log says where the pages are.

use std::io::Write;
use std::sync::{Arc, Mutex};

use testkit::TestStack;

/// Log lines written while a stack starts, as the server writes them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_landing_page_links_the_pages_and_the_log_says_where_they_are() -> anyhow::Result<()> {
    // The test's own runtime runs the server's start on this thread, so a subscriber set for
    // this thread sees what it logs.
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("courtchat=info")
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let stack = TestStack::start().await?;
    drop(guard);

    let home = reqwest::get(stack.http_url("/")).await?;
    anyhow::ensure!(home.status() == 200, "GET /: {}", home.status());
    let desk = reqwest::get(stack.http_url("/desk/")).await?;
    for header in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cross-origin-opener-policy",
        "permissions-policy",
    ] {
        anyhow::ensure!(
            home.headers().get(header).is_some()
                && home.headers().get(header) == desk.headers().get(header),
            "{header}: {:?} on /, {:?} on /desk/",
            home.headers().get(header),
            desk.headers().get(header)
        );
    }
    anyhow::ensure!(
        home.headers()["content-type"]
            .to_str()?
            .starts_with("text/html"),
        "{:?}",
        home.headers()["content-type"]
    );
    let page = home.text().await?;
    for link in ["href=\"/desk/\"", "href=\"/kiosk/\""] {
        anyhow::ensure!(page.contains(link), "no {link} on the landing page: {page}");
    }
    anyhow::ensure!(!page.contains("<script"), "the landing page runs no script");

    let log =
        String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    for url in [
        stack.http_url("/"),
        stack.http_url("/desk/"),
        stack.http_url("/kiosk/"),
    ] {
        anyhow::ensure!(
            log.contains(&url),
            "the start-up log does not name {url}:\n{log}"
        );
    }
    stack.shutdown().await;
    Ok(())
}
