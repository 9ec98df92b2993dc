//! The HTTP edge: the route table, the shared state, extractors, and thin handlers that
//! parse input, call one operation on [`Users`] and shape the answer.

pub mod admin;
pub mod contract;
pub mod extract;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError, web};

use crate::domain::Users;
use crate::error::Error;
use extract::{AdminToken, ServiceCredential, json_config, path_config, query_config};

/// What every handler may use.
pub struct AppState {
    pub users: Users,
    pub service: ServiceCredential,
    pub admin: AdminToken,
}

/// This API's OpenAPI description (`user-service-example/openapi.json`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn not_found() -> Result<HttpResponse, Error> {
    Err(Error::NotFound)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// A resource that answers 405 (with `Allow`) in the error shape to methods it does not
/// route.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = Error::MethodNotAllowed.error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    }))
}

/// Every route. `state` is shared by all workers.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .app_data(json_config())
            .app_data(path_config())
            .app_data(query_config())
            .service(resource("/v1/users", "POST").route(web::post().to(contract::register)))
            .service(
                resource("/v1/credentials/verify", "POST")
                    .route(web::post().to(contract::verify_credentials)),
            )
            .service(resource("/v1/users/{id}", "GET").route(web::get().to(contract::get_user)))
            .service(
                resource("/v1/users/{id}/password", "POST")
                    .route(web::post().to(contract::change_password)),
            )
            .service(resource("/admin/users", "GET").route(web::get().to(admin::list_users)))
            .service(resource("/admin/users/{id}", "GET").route(web::get().to(admin::get_user)))
            .service(
                resource("/admin/users/{id}/disable", "POST").route(web::post().to(admin::disable)),
            )
            .service(
                resource("/admin/users/{id}/enable", "POST").route(web::post().to(admin::enable)),
            )
            .service(
                resource("/admin/users/{id}/roles", "PUT").route(web::put().to(admin::set_roles)),
            )
            .service(resource("/openapi.json", "GET").route(web::get().to(openapi)))
            .service(resource("/healthz", "GET").route(web::get().to(healthz)))
            .default_service(web::to(not_found));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_is_json_describing_the_contract() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        for path in [
            "/v1/users",
            "/v1/credentials/verify",
            "/v1/users/{id}",
            "/v1/users/{id}/password",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
    }
}
