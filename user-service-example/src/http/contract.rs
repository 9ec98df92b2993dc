//! The contract the auth service calls (`users.source = "remote"` there), every route behind
//! the service credential.

use actix_web::{HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::Registration;
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::ServiceCaller;
use crate::model::{User, UserId};

type State = web::Data<AppState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    username: String,
    password: SecretString,
    #[serde(default)]
    email: Option<String>,
}

/// `POST /v1/users`: 201 with the new user.
pub async fn register(
    _caller: ServiceCaller,
    state: State,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    let user = state
        .users
        .register(
            Registration {
                username: body.username,
                email: body.email,
                password: body.password,
            },
            &[],
        )
        .await?;
    Ok(HttpResponse::Created().json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    login: String,
    password: SecretString,
}

/// `POST /v1/credentials/verify`: 200 with the user, or 401 `invalid_credentials`.
pub async fn verify_credentials(
    _caller: ServiceCaller,
    state: State,
    body: web::Json<VerifyRequest>,
) -> Result<web::Json<User>, Error> {
    let body = body.into_inner();
    let user = state
        .users
        .verify_credentials(body.login, body.password)
        .await?;
    Ok(web::Json(user))
}

/// `GET /v1/users/{id}`: the user, disabled ones too.
pub async fn get_user(
    _caller: ServiceCaller,
    state: State,
    id: web::Path<UserId>,
) -> Result<web::Json<User>, Error> {
    Ok(web::Json(state.users.get(id.into_inner()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: SecretString,
    new_password: SecretString,
}

/// `POST /v1/users/{id}/password`: 204.
pub async fn change_password(
    _caller: ServiceCaller,
    state: State,
    id: web::Path<UserId>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, Error> {
    let body = body.into_inner();
    state
        .users
        .change_password(id.into_inner(), body.current_password, body.new_password)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
