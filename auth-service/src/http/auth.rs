//! Registration and the token endpoints: `/register`, `/login`, `/refresh`, `/logout`, each
//! token endpoint with the body flow (JSON clients) and the cookie flow (browser apps; the
//! cookie and its CSRF rule are `browser.rs`'s).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::domain::accounts::Registration;
use crate::domain::sessions::IssuedTokens;
use crate::http::State;
use crate::http::browser::{BrowserPolicy, clears_cookie};
use crate::http::error::ApiError;
use crate::http::wire::{
    LoginQuery, LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest, TokenPair, UserView,
};
use crate::model::ClientInfo;

pub async fn register(
    state: State,
    client: ClientInfo,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let user = state
        .services
        .accounts
        .register(
            Registration {
                username: body.username,
                password: body.password,
                email: body.email,
            },
            client,
        )
        .await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// `POST /login`; with `?cookie=true` the refresh token goes in the cookie, not the body.
pub async fn login(
    state: State,
    client: ClientInfo,
    req: HttpRequest,
    query: web::Query<LoginQuery>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    if query.cookie {
        // A login that sets the cookie passes the same check as one that uses it, so no
        // other site can log the browser in to an account of its choosing.
        state.browser.check_csrf(&req)?;
    }
    let body = body.into_inner();
    let tokens = state
        .services
        .sessions
        .login(&body.username, body.password, client)
        .await?;
    Ok(if query.cookie {
        with_cookie(&state.browser, tokens)
    } else {
        HttpResponse::Ok().json(TokenPair::from(tokens))
    })
}

/// `POST /refresh`: the refresh token from the body, or else from the cookie.
pub async fn refresh(
    state: State,
    client: ClientInfo,
    req: HttpRequest,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let sessions = &state.services.sessions;
    if let Some(refresh_token) = &body.refresh_token {
        let tokens = sessions
            .refresh(refresh_token, body.access_token.as_deref(), client)
            .await?;
        return Ok(HttpResponse::Ok().json(TokenPair::from(tokens)));
    }
    let policy = &state.browser;
    let refresh_token = cookie_token(policy, &req)?;
    let result = sessions
        .refresh(&refresh_token, body.access_token.as_deref(), client)
        .await;
    match result {
        Ok(tokens) => Ok(with_cookie(policy, tokens)),
        Err(e) => Ok(refused_cookie(policy, e.into())),
    }
}

/// `POST /logout`: the refresh token from the body, or else from the cookie, which is
/// cleared.
pub async fn logout(
    state: State,
    client: ClientInfo,
    req: HttpRequest,
    body: web::Json<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let sessions = &state.services.sessions;
    if let Some(refresh_token) = &body.refresh_token {
        sessions.logout(refresh_token, client).await?;
        return Ok(HttpResponse::NoContent().finish());
    }
    let policy = &state.browser;
    let refresh_token = cookie_token(policy, &req)?;
    match sessions.logout(&refresh_token, client).await {
        Ok(()) => Ok(HttpResponse::NoContent()
            .insert_header((header::SET_COOKIE, policy.clear_cookie()))
            .finish()),
        Err(e) => Ok(refused_cookie(policy, e.into())),
    }
}

/// The cookie's refresh token, once the request has passed the CSRF rule. Without a token
/// in the body or the cookie the request is incomplete: 400, as before cookies existed.
fn cookie_token(policy: &BrowserPolicy, req: &HttpRequest) -> Result<String, ApiError> {
    let token = policy.cookie_token(req).ok_or_else(|| {
        ApiError::InvalidRequest(
            "refresh_token is required: in the body, or in the cookie that \
             POST /login?cookie=true sets"
                .into(),
        )
    })?;
    policy.check_csrf(req)?;
    Ok(token)
}

/// 200 with the access token in the body and the refresh token in `Set-Cookie`, living as
/// long as the token does.
fn with_cookie(policy: &BrowserPolicy, tokens: IssuedTokens) -> HttpResponse {
    let cookie = policy.set_cookie(&tokens.refresh_token, tokens.refresh_expires_in);
    let mut pair = TokenPair::from(tokens);
    pair.refresh_token = None;
    HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, cookie))
        .json(pair)
}

/// The error's answer; a cookie whose token can never work again is cleared with it.
fn refused_cookie(policy: &BrowserPolicy, e: ApiError) -> HttpResponse {
    let mut response = e.error_response();
    if clears_cookie(&e) {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, policy.clear_cookie());
    }
    response
}
