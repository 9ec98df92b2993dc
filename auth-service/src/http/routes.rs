//! The route table of both listeners: every path, its methods and its handler. A method a
//! path does not serve is answered 405 with `Allow`; an unknown path 404 — both in the one
//! error shape. `openapi.yaml` describes exactly these routes (a test compares the two).

use actix_web::dev::HttpServiceFactory;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError, web};

use crate::http::error::ApiError;
use crate::http::extract::{json_config, path_config, query_config};
use crate::http::verify::verify_json_config;
use crate::http::{account, admin, auth, health, metrics, oauth, user_events, verify, wellknown};

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// A resource that answers 405 in the error shape, with the `Allow` header RFC 9110 asks
/// for, to methods it does not route. `allow` lists the methods it does.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = ApiError::MethodNotAllowed.error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    }))
}

fn health_routes() -> impl HttpServiceFactory {
    (
        resource("/healthz", "GET").route(web::get().to(health::healthz)),
        resource("/readyz", "GET").route(web::get().to(health::readyz)),
    )
}

/// Routes of the public listener (clients).
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .app_data(query_config())
        .service(resource("/register", "POST").route(web::post().to(auth::register)))
        .service(resource("/login", "POST").route(web::post().to(auth::login)))
        .service(resource("/refresh", "POST").route(web::post().to(auth::refresh)))
        .service(resource("/logout", "POST").route(web::post().to(auth::logout)))
        .service(resource("/logout/all", "POST").route(web::post().to(account::logout_all)))
        .service(resource("/me", "GET").route(web::get().to(account::me)))
        .service(resource("/me/password", "PUT").route(web::put().to(account::change_password)))
        .service(resource("/me/sessions", "GET").route(web::get().to(account::my_sessions)))
        .service(
            resource("/me/sessions/{id}", "DELETE")
                .route(web::delete().to(account::end_my_session)),
        )
        .service(resource("/admin/users", "GET").route(web::get().to(admin::list_users)))
        .service(resource("/admin/users/{id}", "GET").route(web::get().to(admin::get_user)))
        .service(resource("/admin/users/{id}/roles", "PUT").route(web::put().to(admin::set_roles)))
        .service(
            resource("/admin/users/{id}/disable", "POST").route(web::post().to(admin::disable)),
        )
        .service(resource("/admin/users/{id}/enable", "POST").route(web::post().to(admin::enable)))
        .service(
            resource("/admin/users/{id}/sessions", "DELETE")
                .route(web::delete().to(admin::end_sessions)),
        )
        .service(resource("/admin/audit", "GET").route(web::get().to(admin::audit)))
        .service(resource("/.well-known/jwks.json", "GET").route(web::get().to(wellknown::jwks)))
        .service(
            resource("/.well-known/oauth-authorization-server", "GET")
                .route(web::get().to(wellknown::authorization_server)),
        )
        .service(resource("/openapi.json", "GET").route(web::get().to(wellknown::openapi)))
        .service(resource("/oauth/token", "POST").route(web::post().to(oauth::token)))
        .service(resource("/oauth/revoke", "POST").route(web::post().to(oauth::revoke)))
        .service(health_routes())
        .default_service(web::to(not_found));
}

/// Routes of the internal listener (resource servers only).
pub fn configure_internal(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .app_data(query_config())
        .service(
            resource("/verify", "GET, POST")
                .app_data(verify_json_config())
                .route(web::get().to(verify::verify_get))
                .route(web::post().to(verify::verify_post)),
        )
        .service(resource("/oauth/introspect", "POST").route(web::post().to(oauth::introspect)))
        .service(
            resource("/internal/user-events", "POST").route(web::post().to(user_events::report)),
        )
        .service(resource("/metrics", "GET").route(web::get().to(metrics::metrics)))
        .service(health_routes())
        .default_service(web::to(not_found));
}
