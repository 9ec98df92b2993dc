//! The demo single-page app at `GET /`: plain HTML, CSS and JavaScript (no build step),
//! compiled into the binary, served from this service's origin under a strict
//! Content-Security-Policy (no inline script or style). It signs users up and in at the auth
//! service, across origins, with the refresh token in the auth service's `HttpOnly` cookie
//! and the access token in the page's memory, and lists and adds posts here. The page learns
//! the auth service's public URL (`demo.auth_url`) from `GET /demo/config.json`.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::error::Error;

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const APP_CSS: &str = include_str!("../static/app.css");

/// What the page is told, and the policy it is served under.
pub struct DemoPage {
    /// `demo.auth_url`, without a trailing `/`.
    auth_url: String,
    /// The Content-Security-Policy of every demo response.
    csp: String,
}

/// `scheme://host[:port]` of an `http://` or `https://` URL; `None` for anything else.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then(|| format!("{scheme}://{}", host.to_ascii_lowercase()))
}

impl DemoPage {
    pub fn new(auth_url: &str) -> DemoPage {
        let auth_origin = origin_of(auth_url).unwrap_or_default();
        DemoPage {
            auth_url: auth_url.trim_end_matches('/').to_string(),
            // Scripts, styles and API calls from this origin; API calls to the auth service;
            // nothing inline, no plugins, no framing, no form posts, no <base>.
            csp: format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self' {auth_origin}; form-action 'none'; base-uri 'none'; \
                 frame-ancestors 'none'"
            ),
        }
    }

    fn asset(&self, content_type: &'static str, body: &'static str) -> HttpResponse {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, content_type))
            .insert_header((header::CONTENT_SECURITY_POLICY, self.csp.as_str()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .body(body)
    }
}

type Page = web::Data<DemoPage>;

async fn index(page: Page) -> HttpResponse {
    page.asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js(page: Page) -> HttpResponse {
    page.asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css(page: Page) -> HttpResponse {
    page.asset("text/css; charset=utf-8", APP_CSS)
}

async fn config(page: Page) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_SECURITY_POLICY, page.csp.as_str()))
        .json(serde_json::json!({ "auth_url": page.auth_url }))
}

async fn method_not_allowed() -> Result<HttpResponse, Error> {
    Err(Error::MethodNotAllowed)
}

fn get(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The demo's routes, with its settings.
pub fn configure(page: web::Data<DemoPage>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.service(get("/").app_data(page.clone()).route(web::get().to(index)))
            .service(
                get("/demo/app.js")
                    .app_data(page.clone())
                    .route(web::get().to(app_js)),
            )
            .service(
                get("/demo/app.css")
                    .app_data(page.clone())
                    .route(web::get().to(app_css)),
            )
            .service(
                get("/demo/config.json")
                    .app_data(page)
                    .route(web::get().to(config)),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://Auth.example.com/base/").as_deref(),
            Some("https://auth.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        for bad in [
            "auth.example.com",
            "ftp://x",
            "https://",
            "http://a b",
            "http://a'b",
        ] {
            assert_eq!(origin_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let csp = DemoPage::new("http://127.0.0.1:8080").csp;
        assert!(
            csp.contains("script-src 'self';") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:8080;"),
            "{csp}"
        );
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "inline code"
        );
        for handler in [" onclick", " onload", " onsubmit", " onerror", " oninput"] {
            assert!(!html.contains(handler), "inline event handler {handler}");
        }
        assert!(!APP_JS.contains("innerHTML"), "posts are rendered as text");
    }
}
