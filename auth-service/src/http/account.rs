//! The caller's own account: `/me`, `/me/password`, `/me/sessions`, `/logout/all`.

use actix_web::{HttpResponse, web};

use crate::http::State;
use crate::http::error::ApiError;
use crate::http::extract::Caller;
use crate::http::wire::{ChangePasswordRequest, SessionList, SessionView, UserView};
use crate::model::{ClientInfo, SessionId};

pub async fn me(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    let user = state.services.accounts.me(caller.claims()).await?;
    Ok(HttpResponse::Ok().json(UserView::from(user)))
}

pub async fn change_password(
    state: State,
    caller: Caller,
    client: ClientInfo,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    state
        .services
        .accounts
        .change_password(
            caller.claims(),
            body.current_password,
            body.new_password,
            client,
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn my_sessions(state: State, caller: Caller) -> Result<HttpResponse, ApiError> {
    let sessions = state.services.accounts.my_sessions(caller.claims()).await?;
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: sessions
            .into_iter()
            .map(|s| SessionView::new(s, caller.claims().sid))
            .collect(),
    }))
}

pub async fn end_my_session(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<SessionId>,
) -> Result<HttpResponse, ApiError> {
    state
        .services
        .accounts
        .end_my_session(caller.claims(), id.into_inner(), client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn logout_all(
    state: State,
    caller: Caller,
    client: ClientInfo,
) -> Result<HttpResponse, ApiError> {
    state
        .services
        .accounts
        .logout_all(caller.claims(), client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
