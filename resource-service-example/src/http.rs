//! The HTTP layer of the posts service: routes, request parsing, and the mapping of every
//! malformed request onto the one error shape.

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::events::ConsumerStatus;
use crate::extractor::Authenticated;
use crate::posts::{PostId, PostStore};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// A JSON request body, read only when the handler asks for it. Handlers take it after
/// [`Authenticated`] and parse it once the caller is verified, so a request without a valid
/// token is refused before its body is read, whatever the body is.
pub struct JsonBody {
    is_json: bool,
    payload: web::Payload,
}

impl FromRequest for JsonBody {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<JsonBody, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        // Takes the payload stream without reading it.
        let payload = web::Payload::from_request(req, payload);
        Box::pin(async move {
            Ok(JsonBody {
                is_json,
                payload: payload.await?,
            })
        })
    }
}

impl JsonBody {
    pub async fn parse<T: DeserializeOwned>(self) -> Result<T, Error> {
        if !self.is_json {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = self
            .payload
            .to_bytes_limited(MAX_BODY_BYTES)
            .await
            .map_err(|_| Error::PayloadTooLarge)?
            .map_err(|_| Error::InvalidRequest("request body could not be read".into()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidRequest(if e.is_data() {
                format!("invalid request body: {e}")
            } else if e.is_eof() {
                "request body is empty or truncated JSON".into()
            } else {
                "request body is not valid JSON".into()
            })
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    text: String,
}

type Store = web::Data<PostStore>;

async fn create_post(
    caller: Authenticated,
    store: Store,
    body: JsonBody,
) -> Result<HttpResponse, Error> {
    let new: NewPost = body.parse().await?;
    let post = store.create(&caller, &new.text)?;
    log::info!("post {} created by user {}", post.id, caller.user_id);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/posts/{}", post.id)))
        .json(post))
}

async fn list_posts(caller: Authenticated, store: Store) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "posts": store.list_own(&caller) }))
}

async fn get_post(
    _caller: Authenticated,
    store: Store,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(store.get(PostId::parse(&id)?)?))
}

async fn delete_post(
    caller: Authenticated,
    store: Store,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    store.delete(&caller, PostId::parse(&id)?)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The events consumer's state and counters (see `events::StatusReport`); `enabled: false`
/// when `events.url` is unset.
async fn events_status(status: Option<web::Data<ConsumerStatus>>) -> HttpResponse {
    match status {
        Some(status) => HttpResponse::Ok().json(status.report()),
        None => HttpResponse::Ok().json(serde_json::json!({"enabled": false})),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> Result<HttpResponse, Error> {
    Err(Error::NotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, Error> {
    Err(Error::MethodNotAllowed)
}

/// A resource that answers 405 in the error shape for methods it does not route.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// The service's routes. The app must also hold `web::Data<PostStore>` and
/// `web::Data<VerifyClient>`, and `web::Data<ConsumerStatus>` when events are on.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|_, _| Error::NotFound.into()))
        .service(
            resource("/posts")
                .route(web::get().to(list_posts))
                .route(web::post().to(create_post)),
        )
        .service(
            resource("/posts/{id}")
                .route(web::get().to(get_post))
                .route(web::delete().to(delete_post)),
        )
        .service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/events/status").route(web::get().to(events_status)))
        .default_service(web::to(not_found));
}
