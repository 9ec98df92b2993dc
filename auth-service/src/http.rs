//! The HTTP layer: routes for the public and internal listeners, request parsing, and the
//! mapping of every extractor failure onto the service's one error shape.

use actix_web::dev::HttpServiceFactory;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::admin::AuditFilter;
use crate::error::Error;
use crate::service::{AuthService, ClientInfo, NewUser, UserView};
use crate::tokens::{AccessClaims, MAX_TOKEN_BYTES};

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct AppState {
    pub auth: AuthService,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

type State = web::Data<AppState>;

// ---- extractor error mapping -------------------------------------------------------------

fn json_error(err: &JsonPayloadError) -> Error {
    match err {
        JsonPayloadError::ContentType => Error::UnsupportedMediaType,
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            Error::PayloadTooLarge
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            Error::InvalidRequest(format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) if e.is_eof() => {
            Error::InvalidRequest("request body is empty or truncated JSON".into())
        }
        JsonPayloadError::Deserialize(_) => {
            Error::InvalidRequest("request body is not valid JSON".into())
        }
        _ => Error::InvalidRequest("request body could not be read".into()),
    }
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| json_error(&err).into())
}

fn verify_json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| VerifyRejection(json_error(&err)).into())
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| Error::NotFound.into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        Error::InvalidRequest(format!("invalid query string: {err}")).into()
    })
}

async fn not_found() -> Result<HttpResponse, Error> {
    Err(Error::NotFound)
}

/// A resource that answers 405 in the error shape, with the `Allow` header RFC 9110 asks
/// for, to methods it does not route. `allow` lists the methods it does.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = Error::MethodNotAllowed.error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    }))
}

// ---- client info -------------------------------------------------------------------------

impl FromRequest for ClientInfo {
    type Error = Error;
    type Future = std::future::Ready<Result<ClientInfo, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let trusted = req
            .app_data::<State>()
            .map(|s| s.trusted_proxies.as_slice())
            .unwrap_or_default();
        let ip = req.peer_addr().map(|peer| {
            // Lossy, not `to_str`: a client must not be able to make the whole header (and
            // the address its proxy appended to it) vanish with one non-ASCII byte. Lazy:
            // read only when the peer is a trusted proxy.
            let forwarded = req
                .headers()
                .get_all("x-forwarded-for")
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
            client_ip(peer.ip(), forwarded, trusted).to_string()
        });
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        std::future::ready(Ok(ClientInfo { ip, user_agent }))
    }
}

/// The client's address. Only a trusted proxy's `X-Forwarded-For` is believed, and only
/// from the right: each trusted proxy appends the address it received the request from, so
/// walking the list right to left, the first address that is not a trusted proxy is the one
/// that connected to the outermost trusted proxy. Everything left of it was written by the
/// client and is ignored. `Forwarded` is ignored too (proxies pass it through unchanged).
pub fn client_ip<S: AsRef<str>>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = S>,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let values: Vec<S> = forwarded_for.collect();
    let hops: Vec<&str> = values.iter().flat_map(|v| v.as_ref().split(',')).collect();
    for hop in hops.iter().rev() {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage where a trusted proxy should have written an address: stop at the
            // last address a trusted party vouched for.
            None => break,
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|sa| sa.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

// ---- public listener ---------------------------------------------------------------------

#[derive(Deserialize)]
struct RegisterRequest {
    username: String,
    password: SecretString,
    email: Option<String>,
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: SecretString,
}

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct LogoutRequest {
    refresh_token: String,
}

async fn register(
    state: State,
    client: ClientInfo,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let user: UserView = state
        .auth
        .register(
            NewUser {
                username: body.username,
                password: body.password,
                email: body.email,
            },
            client,
        )
        .await?;
    Ok(HttpResponse::Created().json(user))
}

async fn login(
    state: State,
    client: ClientInfo,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let pair = state
        .auth
        .login(body.username, body.password, client)
        .await?;
    Ok(HttpResponse::Ok().json(pair))
}

async fn refresh(
    state: State,
    client: ClientInfo,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, Error> {
    let pair = state
        .auth
        .refresh(&body.refresh_token, body.access_token.as_deref(), client)
        .await?;
    Ok(HttpResponse::Ok().json(pair))
}

async fn logout(
    state: State,
    client: ClientInfo,
    body: web::Json<LogoutRequest>,
) -> Result<HttpResponse, Error> {
    state.auth.logout(&body.refresh_token, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- the caller's own account (Bearer access token) --------------------------------------

/// The verified access token of the request's `Authorization: Bearer` header.
pub struct Caller(pub AccessClaims);

impl FromRequest for Caller {
    type Error = Error;
    type Future = std::future::Ready<Result<Caller, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match req.app_data::<State>() {
            Some(state) => bearer_token(req)
                .and_then(|t| state.auth.verify(t))
                .map(Caller),
            None => Err(Error::Internal("application state missing".into())),
        };
        std::future::ready(result)
    }
}

#[derive(Deserialize)]
struct ChangePasswordRequest {
    current_password: SecretString,
    new_password: SecretString,
}

async fn me(state: State, caller: Caller) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.auth.me(&caller.0).await?))
}

async fn change_password(
    state: State,
    caller: Caller,
    client: ClientInfo,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    state
        .auth
        .change_password(&caller.0, body.current_password, body.new_password, client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn my_sessions(state: State, caller: Caller) -> Result<HttpResponse, Error> {
    let sessions = state.auth.my_sessions(&caller.0).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": sessions })))
}

async fn end_my_session(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state.auth.end_my_session(&caller.0, &id, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn logout_all(
    state: State,
    caller: Caller,
    client: ClientInfo,
) -> Result<HttpResponse, Error> {
    state.auth.logout_all(&caller.0, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- administration ----------------------------------------------------------------------

#[derive(Deserialize)]
struct UserListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct AuditQueryParams {
    user_id: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct RolesRequest {
    roles: Vec<String>,
}

async fn admin_users(
    state: State,
    caller: Caller,
    query: web::Query<UserListQuery>,
) -> Result<HttpResponse, Error> {
    let q = query.into_inner();
    let page = state
        .auth
        .admin_list_users(&caller.0, q.username, q.cursor, q.limit)
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn admin_user(
    state: State,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(state.auth.admin_get_user(&caller.0, &id).await?))
}

async fn admin_roles(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<String>,
    body: web::Json<RolesRequest>,
) -> Result<HttpResponse, Error> {
    let user = state
        .auth
        .admin_set_roles(&caller.0, &id, body.into_inner().roles, client)
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

async fn admin_disable(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user = state
        .auth
        .admin_set_disabled(&caller.0, &id, true, client)
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

async fn admin_enable(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let user = state
        .auth
        .admin_set_disabled(&caller.0, &id, false, client)
        .await?;
    Ok(HttpResponse::Ok().json(user))
}

async fn admin_end_sessions(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state
        .auth
        .admin_end_sessions(&caller.0, &id, client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn admin_audit(
    state: State,
    caller: Caller,
    query: web::Query<AuditQueryParams>,
) -> Result<HttpResponse, Error> {
    let q = query.into_inner();
    let page = state
        .auth
        .admin_audit(
            &caller.0,
            AuditFilter {
                user_id: q.user_id,
                kind: q.kind,
                since: q.since,
                until: q.until,
                limit: q.limit,
                cursor: q.cursor,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: State) -> Result<HttpResponse, Error> {
    state.auth.db.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

fn health_routes() -> impl HttpServiceFactory {
    (
        resource("/healthz", "GET").route(web::get().to(healthz)),
        resource("/readyz", "GET").route(web::get().to(readyz)),
    )
}

/// Routes of the public listener (clients).
pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .app_data(query_config())
        .service(resource("/register", "POST").route(web::post().to(register)))
        .service(resource("/login", "POST").route(web::post().to(login)))
        .service(resource("/refresh", "POST").route(web::post().to(refresh)))
        .service(resource("/logout", "POST").route(web::post().to(logout)))
        .service(resource("/logout/all", "POST").route(web::post().to(logout_all)))
        .service(resource("/me", "GET").route(web::get().to(me)))
        .service(resource("/me/password", "PUT").route(web::put().to(change_password)))
        .service(resource("/me/sessions", "GET").route(web::get().to(my_sessions)))
        .service(resource("/me/sessions/{id}", "DELETE").route(web::delete().to(end_my_session)))
        .service(resource("/admin/users", "GET").route(web::get().to(admin_users)))
        .service(resource("/admin/users/{id}", "GET").route(web::get().to(admin_user)))
        .service(resource("/admin/users/{id}/roles", "PUT").route(web::put().to(admin_roles)))
        .service(resource("/admin/users/{id}/disable", "POST").route(web::post().to(admin_disable)))
        .service(resource("/admin/users/{id}/enable", "POST").route(web::post().to(admin_enable)))
        .service(
            resource("/admin/users/{id}/sessions", "DELETE")
                .route(web::delete().to(admin_end_sessions)),
        )
        .service(resource("/admin/audit", "GET").route(web::get().to(admin_audit)))
        .service(health_routes())
        .default_service(web::to(not_found));
}

// ---- internal listener -------------------------------------------------------------------

/// A `/verify` refusal: the usual error body plus `"active": false`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct VerifyRejection(Error);

#[derive(Serialize)]
struct Inactive<'a> {
    active: bool,
    error: &'a str,
    message: String,
}

impl ResponseError for VerifyRejection {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let body = self.0.body();
        let mut response = HttpResponse::build(self.status_code()).json(Inactive {
            active: false,
            error: body.error,
            message: body.message,
        });
        self.0.decorate(&mut response);
        response
    }
}

impl From<Error> for VerifyRejection {
    fn from(e: Error) -> Self {
        VerifyRejection(e)
    }
}

#[derive(Deserialize)]
struct VerifyRequest {
    token: String,
}

#[derive(Serialize)]
struct Active<'a> {
    active: bool,
    sub: &'a str,
    username: &'a str,
    roles: &'a [String],
    sid: &'a str,
    jti: &'a str,
    exp: i64,
    iat: i64,
}

fn bearer_token(req: &HttpRequest) -> Result<&str, Error> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(Error::InvalidToken("missing bearer token"))?;
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(Error::InvalidToken("token is too large"));
    }
    let value = value
        .to_str()
        .map_err(|_| Error::InvalidToken("authorization header is not valid"))?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::InvalidToken(
        "authorization header is not a bearer token",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::InvalidToken(
            "authorization header is not a bearer token",
        ));
    }
    Ok(token.trim())
}

fn verified(claims: &AccessClaims) -> HttpResponse {
    let mut response = HttpResponse::Ok().json(Active {
        active: true,
        sub: &claims.sub,
        username: &claims.username,
        roles: &claims.roles,
        sid: &claims.sid,
        jti: &claims.jti,
        exp: claims.exp,
        iat: claims.iat,
    });
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-auth-user-id", claims.sub.clone()),
        ("x-auth-user", claims.username.clone()),
        ("x-auth-roles", claims.roles.join(",")),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header::HeaderName::from_static(name), v);
        }
    }
    response
}

async fn verify_get(state: State, req: HttpRequest) -> Result<HttpResponse, VerifyRejection> {
    let token = bearer_token(&req)?;
    Ok(verified(&state.auth.verify(token)?))
}

async fn verify_post(
    state: State,
    body: web::Json<VerifyRequest>,
) -> Result<HttpResponse, VerifyRejection> {
    Ok(verified(&state.auth.verify(&body.token)?))
}

/// Routes of the internal listener (resource servers only).
pub fn configure_internal(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .app_data(query_config())
        .service(
            resource("/verify", "GET, POST")
                .app_data(verify_json_config())
                .route(web::get().to(verify_get))
                .route(web::post().to(verify_post)),
        )
        .service(health_routes())
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let xff = ["9.9.9.9"];
        assert_eq!(
            client_ip(ip("1.2.3.4"), xff.into_iter(), &[]),
            ip("1.2.3.4")
        );
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("1.2.3.4"), xff.into_iter(), &trusted),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        let peer = ip("10.0.0.2");
        let xff = ["6.6.6.6, 203.0.113.7", "192.168.1.1:4000"];
        assert_eq!(
            client_ip(peer, xff.into_iter(), &trusted),
            ip("203.0.113.7")
        );
        // IPv6, bracketed with a port, and IPv4-mapped.
        let xff = ["[2001:db8::1]:443"];
        assert_eq!(
            client_ip(peer, xff.into_iter(), &trusted),
            ip("2001:db8::1")
        );
        let xff = ["::ffff:198.51.100.1"];
        assert_eq!(
            client_ip(peer, xff.into_iter(), &trusted),
            ip("198.51.100.1")
        );
        let mapped_peer = ip("::ffff:10.0.0.2");
        assert_eq!(
            client_ip(mapped_peer, ["8.8.8.8"].into_iter(), &trusted),
            ip("8.8.8.8")
        );
    }

    #[test]
    fn garbage_or_all_trusted_stops_at_the_last_vouched_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        assert_eq!(
            client_ip(peer, ["1.1.1.1, junk"].into_iter(), &trusted),
            peer
        );
        assert_eq!(
            client_ip(peer, ["1.1.1.1, junk, 10.0.0.9"].into_iter(), &trusted),
            ip("10.0.0.9")
        );
        assert_eq!(
            client_ip(peer, ["10.0.0.7, 10.0.0.8"].into_iter(), &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(client_ip(peer, std::iter::empty::<&str>(), &trusted), peer);
    }
}
