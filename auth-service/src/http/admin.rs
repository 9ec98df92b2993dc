//! Administration: `/admin/users…` and `/admin/audit`.

use actix_web::{HttpResponse, web};

use crate::domain::admin::AuditFilter;
use crate::domain::audit::AuditKind;
use crate::http::State;
use crate::http::error::ApiError;
use crate::http::extract::Caller;
use crate::http::wire::{
    AdminUserView, AuditPage, AuditQueryParams, AuditView, RolesRequest, UserListQuery, UserPage,
    parse_rfc3339,
};
use crate::model::{ClientInfo, UserId};

pub async fn list_users(
    state: State,
    caller: Caller,
    query: web::Query<UserListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = state
        .services
        .admin
        .list_users(caller.claims(), q.username, q.cursor, q.limit)
        .await?;
    Ok(HttpResponse::Ok().json(UserPage {
        users: page.items.into_iter().map(AdminUserView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn get_user(
    state: State,
    caller: Caller,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .services
        .admin
        .get_user(caller.claims(), id.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(AdminUserView::from(user)))
}

pub async fn set_roles(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<UserId>,
    body: web::Json<RolesRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .services
        .admin
        .set_roles(caller.claims(), id.into_inner(), &body.roles, client)
        .await?;
    Ok(HttpResponse::Ok().json(AdminUserView::from(user)))
}

pub async fn disable(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .services
        .admin
        .set_disabled(caller.claims(), id.into_inner(), true, client)
        .await?;
    Ok(HttpResponse::Ok().json(AdminUserView::from(user)))
}

pub async fn enable(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .services
        .admin
        .set_disabled(caller.claims(), id.into_inner(), false, client)
        .await?;
    Ok(HttpResponse::Ok().json(AdminUserView::from(user)))
}

pub async fn end_sessions(
    state: State,
    caller: Caller,
    client: ClientInfo,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ApiError> {
    state
        .services
        .admin
        .end_sessions(caller.claims(), id.into_inner(), client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Parses the audit query's fields; each bad one is named in a 400 `validation_failed`.
fn audit_filter(q: AuditQueryParams) -> Result<AuditFilter, ApiError> {
    let time = |field: &str, value: Option<String>| {
        value
            .map(|v| {
                parse_rfc3339(&v).ok_or_else(|| {
                    ApiError::Validation(format!("{field}: expected an RFC 3339 time"))
                })
            })
            .transpose()
    };
    Ok(AuditFilter {
        user_id: q
            .user_id
            .map(|id| {
                UserId::parse(&id)
                    .map_err(|_| ApiError::Validation("user_id: not a user id".into()))
            })
            .transpose()?,
        kind: q
            .kind
            .map(|k| {
                AuditKind::parse(&k)
                    .ok_or_else(|| ApiError::Validation(format!("kind: unknown event kind {k:?}")))
            })
            .transpose()?,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        limit: q.limit,
        cursor: q.cursor,
    })
}

pub async fn audit(
    state: State,
    caller: Caller,
    query: web::Query<AuditQueryParams>,
) -> Result<HttpResponse, ApiError> {
    // Who asks comes first: a non-administrator learns nothing about the filter syntax.
    state.services.admin.ensure_admin(caller.claims()).await?;
    let filter = audit_filter(query.into_inner())?;
    let page = state.services.admin.audit(caller.claims(), filter).await?;
    Ok(HttpResponse::Ok().json(AuditPage {
        events: page.items.into_iter().map(AuditView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
