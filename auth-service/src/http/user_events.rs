//! `POST /internal/user-events` (internal listener): the user service reports a disabled
//! user, a removed role or a changed password (`users.source = "remote"`). The caller
//! authenticates as a client registered with `--user-events` (HTTP Basic) before the body
//! is read; with built-in users there is nothing to report, and the path answers 404.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::domain::Error;
use crate::domain::directory::{ReportKind, UserReport};
use crate::http::State;
use crate::http::error::ApiError;
use crate::http::extract::{MAX_BODY_BYTES, basic_credentials};
use crate::model::{ClientInfo, Role, UserId};

/// The report as the user service sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    id: String,
    kind: String,
    user_id: String,
    #[serde(default)]
    role: Option<String>,
    /// When the change happened at the user service (kept in the audit trail).
    #[serde(default)]
    at: Option<i64>,
}

impl TryFrom<ReportBody> for UserReport {
    type Error = ApiError;
    fn try_from(b: ReportBody) -> Result<UserReport, ApiError> {
        let invalid = |what: &str| ApiError::InvalidRequest(format!("invalid report: {what}"));
        let event_id = uuid::Uuid::parse_str(&b.id).map_err(|_| invalid("id must be a UUID"))?;
        let kind = ReportKind::parse(&b.kind).ok_or_else(|| {
            invalid("kind must be user_disabled, role_revoked or password_changed")
        })?;
        let user_id = UserId::parse(&b.user_id).map_err(|_| invalid("user_id must be a UUID"))?;
        let role = match (kind, b.role) {
            (ReportKind::RoleRevoked, Some(role)) => Some(
                Role::parse(&role)
                    .map_err(|_| invalid("role is not a role name"))?
                    .as_str()
                    .to_string(),
            ),
            (ReportKind::RoleRevoked, None) => return Err(invalid("role_revoked needs role")),
            (_, Some(_)) => return Err(invalid("role belongs to role_revoked only")),
            (_, None) => None,
        };
        Ok(UserReport {
            event_id,
            kind,
            user_id,
            role,
            reported_at: b.at,
        })
    }
}

pub async fn report(
    state: State,
    req: HttpRequest,
    client: ClientInfo,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, secret) = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(Error::InvalidClient)
        .and_then(|v| basic_credentials(v).map_err(|_| Error::InvalidClient))?;
    let caller = state.services.clients.authenticate(&id, &secret).await?;
    if !caller.can_user_events {
        return Err(Error::UnauthorizedClient.into());
    }
    if state.services.remote_users().is_none() {
        return Err(ApiError::NotFound);
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = payload
        .to_bytes_limited(MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?
        .map_err(|_| ApiError::InvalidRequest("request body could not be read".into()))?;
    let body: ReportBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidRequest(if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            "request body is not valid JSON".into()
        })
    })?;
    let report = UserReport::try_from(body)?;
    state
        .services
        .admin
        .apply_user_report(report, client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
