//! Request and response bodies as they appear on the wire, and their conversions from the
//! domain's types. Times are RFC 3339 strings here, Unix seconds everywhere else.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::User;
use crate::domain::accounts::SessionSummary;
use crate::domain::audit::AuditEntry;
use crate::domain::sessions::{AccessClaims, IssuedTokens};
use crate::model::{SessionId, UserId};

pub fn rfc3339(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into Unix seconds.
pub fn parse_rfc3339(value: &str) -> Option<i64> {
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

// ---- requests ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: SecretString,
    pub email: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: SecretString,
}

/// `POST /login`'s query: `?cookie=true` delivers the refresh token as a cookie.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    pub cookie: bool,
}

/// Without `refresh_token`, the refresh token comes from the cookie.
#[derive(Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: Option<String>,
    pub access_token: Option<String>,
}

/// Without `refresh_token`, the refresh token comes from the cookie.
#[derive(Deserialize)]
pub struct LogoutRequest {
    pub refresh_token: Option<String>,
}

#[derive(Deserialize)]
pub struct ChangePasswordRequest {
    pub current_password: SecretString,
    pub new_password: SecretString,
}

#[derive(Deserialize)]
pub struct RolesRequest {
    pub roles: Vec<String>,
}

#[derive(Deserialize)]
pub struct VerifyRequest {
    pub token: String,
}

#[derive(Deserialize)]
pub struct UserListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub username: Option<String>,
}

/// `GET /admin/audit`'s query, as received; `http::admin` parses it.
#[derive(Deserialize)]
pub struct AuditQueryParams {
    pub user_id: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

// ---- responses ---------------------------------------------------------------------------

/// The tokens of a login or refresh. With cookie delivery `refresh_token` is left out: it
/// goes in the cookie only, out of JavaScript's reach.
#[derive(Serialize)]
pub struct TokenPair {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
}

impl From<IssuedTokens> for TokenPair {
    fn from(t: IssuedTokens) -> Self {
        TokenPair {
            access_token: t.access_token,
            refresh_token: Some(t.refresh_token),
            token_type: "Bearer",
            expires_in: t.expires_in,
            refresh_expires_in: t.refresh_expires_in,
        }
    }
}

/// A user as they see themselves (`/register`, `/me`).
#[derive(Serialize)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            username: u.username,
            email: u.email,
            roles: u.roles.names(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// A user as administrators see them.
#[derive(Serialize)]
pub struct AdminUserView {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<User> for AdminUserView {
    fn from(u: User) -> Self {
        AdminUserView {
            id: u.id,
            username: u.username,
            email: u.email,
            roles: u.roles.names(),
            disabled: u.disabled,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Serialize)]
pub struct UserPage {
    pub users: Vec<AdminUserView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize)]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub current: bool,
}

impl SessionView {
    pub fn new(s: SessionSummary, current: SessionId) -> SessionView {
        SessionView {
            current: s.id == current,
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: s.expires_at.map(rfc3339),
            user_agent: s.user_agent,
            ip: s.ip,
        }
    }
}

#[derive(Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: serde_json::Value,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        AuditView {
            id: e.id,
            at: rfc3339(e.at),
            kind: e.kind,
            user_id: e.user_id,
            session_id: e.session_id,
            ip: e.ip,
            user_agent: e.user_agent,
            detail: e.detail,
        }
    }
}

#[derive(Serialize)]
pub struct AuditPage {
    pub events: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// `/verify`'s positive answer.
#[derive(Serialize)]
pub struct Active<'a> {
    pub active: bool,
    pub sub: UserId,
    pub username: &'a str,
    pub roles: &'a [String],
    pub sid: SessionId,
    pub jti: crate::model::TokenId,
    pub exp: i64,
    pub iat: i64,
}

impl<'a> From<&'a AccessClaims> for Active<'a> {
    fn from(c: &'a AccessClaims) -> Self {
        Active {
            active: true,
            sub: c.sub,
            username: &c.username,
            roles: &c.roles,
            sid: c.sid,
            jti: c.jti,
            exp: c.exp,
            iat: c.iat,
        }
    }
}

/// `/verify`'s refusal: the error shape plus `"active": false`.
#[derive(Serialize)]
pub struct Inactive {
    pub active: bool,
    pub error: &'static str,
    pub message: String,
}
