//! The operators' API, behind `Authorization: Bearer <admin.token>` (404 when no token is
//! configured).

use actix_web::web;
use serde::Deserialize;

use crate::domain::Page;
use crate::error::Error;
use crate::http::AppState;
use crate::http::extract::Operator;
use crate::model::{User, UserId};

type State = web::Data<AppState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u64,
}

fn default_limit() -> u32 {
    50
}

/// `GET /admin/users?limit=50&offset=0`: users in registration order.
pub async fn list_users(
    _op: Operator,
    state: State,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page>, Error> {
    Ok(web::Json(
        state.users.list(query.limit, query.offset).await?,
    ))
}

/// `GET /admin/users/{id}`.
pub async fn get_user(
    _op: Operator,
    state: State,
    id: web::Path<UserId>,
) -> Result<web::Json<User>, Error> {
    Ok(web::Json(state.users.get(id.into_inner()).await?))
}

/// `POST /admin/users/{id}/disable`: the user; the auth service hears `user_disabled`.
pub async fn disable(
    _op: Operator,
    state: State,
    id: web::Path<UserId>,
) -> Result<web::Json<User>, Error> {
    Ok(web::Json(
        state.users.set_disabled(id.into_inner(), true).await?,
    ))
}

/// `POST /admin/users/{id}/enable`: the user.
pub async fn enable(
    _op: Operator,
    state: State,
    id: web::Path<UserId>,
) -> Result<web::Json<User>, Error> {
    Ok(web::Json(
        state.users.set_disabled(id.into_inner(), false).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    roles: Vec<String>,
}

/// `PUT /admin/users/{id}/roles`: replaces the roles (`user` is always kept); the auth
/// service hears `role_revoked` for each role taken away.
pub async fn set_roles(
    _op: Operator,
    state: State,
    id: web::Path<UserId>,
    body: web::Json<RolesRequest>,
) -> Result<web::Json<User>, Error> {
    Ok(web::Json(
        state
            .users
            .set_roles(id.into_inner(), body.into_inner().roles)
            .await?,
    ))
}
