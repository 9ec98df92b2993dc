//! `/healthz` (the process is up) and `/readyz` (the database answers), on both listeners.

use actix_web::HttpResponse;

use crate::http::State;
use crate::http::error::ApiError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: State) -> Result<HttpResponse, ApiError> {
    state.services.maintenance.ready().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}
