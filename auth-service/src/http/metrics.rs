//! `GET /metrics` (internal listener): the Prometheus text format, with the current state
//! read from the domain at scrape time; and the middleware that counts every request by
//! route pattern (never the raw path: ids would make the label set unbounded).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::domain::Error;
use crate::http::State;
use crate::http::error::ApiError;

pub async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    let services = &state.services;
    for (name, value) in services.maintenance.gauges(&services.sessions) {
        state.metrics.state.with_label_values(&[name]).set(value);
    }
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::from(Error::Internal(Box::new(e))))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// Counts the request and its latency under its route pattern (`/admin/users/{id}`), or
/// `unmatched`.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<crate::http::AppState>>()
        .map(|s| s.metrics.clone());
    let listener = req.app_data::<Listener>().map_or("unknown", |l| l.0);
    let method = method_label(req.method());
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let status = res.status();
        let status = status.as_str();
        metrics
            .http_requests
            .with_label_values(&[listener, &route, method, status])
            .inc();
        metrics
            .http_latency
            .with_label_values(&[listener, &route, status])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// The `method` label: the methods HTTP defines, and `other` for the rest, so a client
/// inventing methods cannot grow the label set (and the memory behind it) without bound.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Which listener an app serves, for the `listener` label.
#[derive(Clone, Copy)]
pub struct Listener(pub &'static str);
