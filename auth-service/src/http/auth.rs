//! Registration and the token endpoints: `/register`, `/login`, `/refresh`, `/logout`.

use actix_web::{HttpResponse, web};

use crate::domain::accounts::Registration;
use crate::http::State;
use crate::http::error::ApiError;
use crate::http::wire::{
    LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest, TokenPair, UserView,
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

pub async fn login(
    state: State,
    client: ClientInfo,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let tokens = state
        .services
        .sessions
        .login(&body.username, body.password, client)
        .await?;
    Ok(HttpResponse::Ok().json(TokenPair::from(tokens)))
}

pub async fn refresh(
    state: State,
    client: ClientInfo,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = state
        .services
        .sessions
        .refresh(&body.refresh_token, body.access_token.as_deref(), client)
        .await?;
    Ok(HttpResponse::Ok().json(TokenPair::from(tokens)))
}

pub async fn logout(
    state: State,
    client: ClientInfo,
    body: web::Json<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .services
        .sessions
        .logout(&body.refresh_token, client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
