//! The page a browser is shown when a sign-in through the identity provider does not end at the
//! desk: what happened, in words for the person (the problem's title and detail), with the
//! problem's `type` on the page for tests and support, and a way back to the desk. The sign-in
//! routes are navigations, so a refusal is a page rather than JSON; the status is the problem's.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Problem;

/// A refused sign-in, answered as a page.
#[derive(Debug)]
pub struct Page(pub Problem);

impl From<Problem> for Page {
    fn from(problem: Problem) -> Self {
        Self(problem)
    }
}

/// `text` with HTML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let value = serde_json::to_value(&self.0).unwrap_or_default();
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        let status = value["status"]
            .as_u64()
            .and_then(|status| StatusCode::from_u16(u16::try_from(status).ok()?).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>Sign-in: {title}</title>\n<link rel=\"stylesheet\" href=\"/web/shared/base.css\">\n\
             </head>\n<body>\n<main id=\"sign-in-refused\" data-problem=\"{kind}\">\n\
             <h1>{title}</h1>\n<p id=\"sign-in-detail\">{detail}</p>\n\
             <p><a href=\"/desk/\">Back to the desk</a></p>\n</main>\n</body>\n</html>\n",
            title = escape(&text("title")),
            kind = escape(&text("type")),
            detail = escape(&text("detail")),
        );
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Some(wait) = value["retry_after"].as_u64()
            && let Ok(wait) = HeaderValue::from_str(&wait.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, wait);
        }
        crate::web::hardened(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_the_problem_escaped_with_its_status() {
        let page = Page(
            Problem::new(StatusCode::FORBIDDEN, "no-account", "no courtchat account")
                .detail("<script>alert(1)</script> & more"),
        );
        let response = page.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
