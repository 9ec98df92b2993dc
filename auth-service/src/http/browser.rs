//! Browser apps: CORS for the origins of `cors.allowed_origins`, the refresh-token cookie
//! (`POST /login?cookie=true`, then `/refresh` and `/logout` without a token in the body),
//! and the CSRF rule every cookie-authenticated request must pass. Which requests use the
//! cookie is decided by the handlers in `auth.rs`; how the cookie looks and when a request
//! may use it is decided here, once.

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};

use crate::config::OriginList;
use crate::domain::Error;
use crate::http::AppState;
use crate::http::error::ApiError;

/// The cookie's name with `Secure`: the `__Host-` prefix makes browsers refuse it unless it
/// is `Secure`, has `Path=/` and no `Domain`, so no sibling host can plant or shadow it.
const SECURE_NAME: &str = "__Host-refresh_token";
/// Its name without `Secure` (`cookie.secure = false`, plain-http development only).
const PLAIN_NAME: &str = "refresh_token";
/// The request header a cookie-authenticated request must carry. Browsers send a custom
/// header across origins only after a successful preflight, which only allowed origins get.
pub const CSRF_HEADER: &str = "x-requested-with";
/// Seconds browsers may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: usize = 600;

/// Who may use the cookie, and how it is written.
pub struct BrowserPolicy {
    /// `cors.allowed_origins`.
    pub allowed_origins: OriginList,
    /// The public listener's own origin (from `server.public_url`, or its bound address).
    pub own_origin: String,
    /// `cookie.secure`.
    pub secure_cookie: bool,
}

impl BrowserPolicy {
    /// `scheme://host[:port]` of a URL such as `server.public_url`.
    pub fn origin_of(url: &str) -> String {
        let url = url.to_ascii_lowercase();
        match url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
                format!("{scheme}://{host}")
            }
            None => url,
        }
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.secure_cookie {
            SECURE_NAME
        } else {
            PLAIN_NAME
        }
    }

    fn cookie(&self, value: &str, max_age: i64) -> String {
        // Path=/: the cookie must reach both /refresh and /logout, whose only common path
        // is the root; only those two endpoints ever read it.
        let mut cookie = format!(
            "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
            self.cookie_name(),
            max_age.max(0)
        );
        if self.secure_cookie {
            cookie.push_str("; Secure");
        }
        cookie
    }

    /// `Set-Cookie` for a refresh token living `max_age` more seconds.
    pub fn set_cookie(&self, refresh_token: &str, max_age: i64) -> header::HeaderValue {
        header::HeaderValue::from_str(&self.cookie(refresh_token, max_age))
            .unwrap_or_else(|_| self.clear_cookie())
    }

    /// `Set-Cookie` that makes the browser drop the cookie.
    pub fn clear_cookie(&self) -> header::HeaderValue {
        header::HeaderValue::from_str(&self.cookie("", 0))
            .unwrap_or(header::HeaderValue::from_static(""))
    }

    /// The refresh token in the request's cookie, if there is one.
    pub fn cookie_token(&self, req: &HttpRequest) -> Option<String> {
        let name = self.cookie_name();
        req.headers()
            .get_all(header::COOKIE)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, v)| *n == name && !v.is_empty())
            .map(|(_, v)| v.to_string())
    }

    /// Whether `origin` is the service's own or on the allow-list.
    fn origin_accepted(&self, origin: &str, req: &HttpRequest) -> bool {
        if self.allowed_origins.contains(origin) || origin.eq_ignore_ascii_case(&self.own_origin) {
            return true;
        }
        // The origin the browser used to reach this listener, by its `Host` (which pages
        // cannot set): same-origin without `server.public_url`.
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("http://{host}")))
    }

    /// The CSRF rule for a request that authenticates with (or sets) the cookie: an
    /// `Origin` that is the service's own or allowed, and a non-empty `X-Requested-With`.
    pub fn check_csrf(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .ok_or(ApiError::CsrfRejected(
                "a cookie-authenticated request needs an Origin header",
            ))?;
        if !self.origin_accepted(origin, req) {
            return Err(ApiError::CsrfRejected(
                "the request's Origin may not use the refresh-token cookie",
            ));
        }
        let marked = req
            .headers()
            .get(CSRF_HEADER)
            .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
        if !marked {
            return Err(ApiError::CsrfRejected(
                "a cookie-authenticated request needs a non-empty X-Requested-With header",
            ));
        }
        Ok(())
    }
}

/// CORS for the allowed origins, with credentials. Requests from other origins never
/// reach it as CORS requests: [`cors_gate`] sees to that.
pub fn cors(origins: &OriginList) -> Cors {
    let allowed = origins.clone();
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin.to_str().is_ok_and(|origin| allowed.contains(origin))
        })
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static(CSRF_HEADER),
        ])
        .supports_credentials()
        .block_on_origin_mismatch(false)
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Runs outside [`cors`]: a request from an origin that is not on the allow-list is served
/// as if CORS did not exist — its preflight is an ordinary `OPTIONS` (405, no CORS headers),
/// and no `Access-Control-*` header is added to any answer it gets. A preflight from an
/// allowed origin that asks for a method or header outside the list is answered 400
/// `invalid_request` in the error shape.
pub async fn cors_gate(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let allowed = match (
        req.app_data::<web::Data<AppState>>(),
        req.headers().get(header::ORIGIN),
    ) {
        (Some(state), Some(origin)) => origin
            .to_str()
            .is_ok_and(|o| state.browser.allowed_origins.contains(o)),
        _ => false,
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !allowed {
        req.headers_mut()
            .remove(header::ACCESS_CONTROL_REQUEST_METHOD);
    }
    let mut res = next.call(req).await?;
    if !allowed {
        let cors_headers: Vec<header::HeaderName> = res
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors_headers {
            res.headers_mut().remove(name);
        }
        return Ok(res.map_into_left_body());
    }
    if preflight && res.status() == actix_web::http::StatusCode::BAD_REQUEST {
        let (req, _) = res.into_parts();
        let refused = ApiError::InvalidRequest(
            "CORS preflight refused: allowed methods are GET, POST, PUT, DELETE and allowed \
             headers content-type, authorization, x-requested-with"
                .into(),
        )
        .error_response();
        return Ok(ServiceResponse::new(req, refused).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// A refused cookie flow that leaves a stale cookie behind gets it cleared with the answer.
pub fn clears_cookie(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Domain(
            Error::InvalidToken(_)
                | Error::TokenExpired
                | Error::TokenReused
                | Error::SessionRevoked
                | Error::TokenRevoked
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secure: bool) -> BrowserPolicy {
        BrowserPolicy {
            allowed_origins: "http://app.test:3000".parse().unwrap(),
            own_origin: "http://127.0.0.1:8080".into(),
            secure_cookie: secure,
        }
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_unless_turned_off() {
        let c = policy(true).set_cookie("abc.def.ghi", 3600);
        assert_eq!(
            c.to_str().unwrap(),
            "__Host-refresh_token=abc.def.ghi; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict; Secure"
        );
        let c = policy(false).clear_cookie();
        assert_eq!(
            c.to_str().unwrap(),
            "refresh_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            BrowserPolicy::origin_of("https://Auth.example.com/base/?x"),
            "https://auth.example.com"
        );
        assert_eq!(
            BrowserPolicy::origin_of("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn csrf_needs_an_accepted_origin_and_the_header() {
        use actix_web::test::TestRequest;
        let p = policy(true);
        let ok = |origin: Option<&str>, xrw: Option<&str>| {
            let mut r = TestRequest::post().insert_header((header::HOST, "auth.test:8080"));
            if let Some(o) = origin {
                r = r.insert_header((header::ORIGIN, o));
            }
            if let Some(x) = xrw {
                r = r.insert_header((CSRF_HEADER, x));
            }
            p.check_csrf(&r.to_http_request()).is_ok()
        };
        assert!(ok(Some("http://app.test:3000"), Some("fetch")));
        assert!(ok(Some("http://127.0.0.1:8080"), Some("1")));
        assert!(ok(Some("http://auth.test:8080"), Some("1")));
        assert!(!ok(Some("http://evil.test"), Some("fetch")));
        assert!(!ok(Some("null"), Some("fetch")));
        assert!(!ok(None, Some("fetch")));
        assert!(!ok(Some("http://app.test:3000"), None));
        assert!(!ok(Some("http://app.test:3000"), Some(" ")));
    }
}
