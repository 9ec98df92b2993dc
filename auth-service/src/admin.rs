//! Administration: users, roles, disabling, ending sessions, reading the audit trail.
//!
//! Every operation re-checks the caller's `admin` role against the database (the claim in
//! the token could be up to `tokens.access_ttl` old) and acts only on the user named in the
//! path. The role and disable changes are plain functions over a connection so that the
//! command line applies exactly the same rules.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::account::is_uuid;
use crate::audit::{self, AuditEvent, AuditKind, AuditQuery, AuditView};
use crate::db::DbConn;
use crate::error::Error;
use crate::service::{AuthService, ClientInfo, now, rfc3339};
use crate::store::{self, RevokeReason, UserRow};
use crate::tokens::AccessClaims;

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;
const MAX_ROLES: usize = 16;

#[derive(Debug, Serialize)]
pub struct AdminUserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&UserRow> for AdminUserView {
    fn from(u: &UserRow) -> Self {
        AdminUserView {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            roles: u.role_list(),
            disabled: u.disabled,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UserPage {
    pub users: Vec<AdminUserView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub events: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// Filters of `GET /admin/audit`, as received.
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Role names: lower-case letters, digits, `_` and `-`, starting with a letter.
pub fn validate_roles(roles: &[String]) -> Result<(), Error> {
    if roles.len() > MAX_ROLES {
        return Err(Error::Validation(format!("roles: at most {MAX_ROLES}")));
    }
    for r in roles {
        let ok = (1..=32).contains(&r.len())
            && r.as_bytes()[0].is_ascii_lowercase()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::Validation(format!(
                "roles: {r:?} is not a valid role name (a-z, 0-9, '_', '-'; starting with a letter)"
            )));
        }
    }
    Ok(())
}

fn page_limit(limit: Option<i64>) -> Result<i64, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Error::Validation(format!("limit: 1 to {MAX_PAGE}"))),
    }
}

fn bad_cursor() -> Error {
    Error::InvalidRequest("cursor is not valid".into())
}

fn encode_user_cursor(u: &UserRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", u.created_at, u.id))
}

fn decode_user_cursor(cursor: &str) -> Result<(i64, String), Error> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad_cursor())?;
    let raw = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    let (ts, id) = raw.split_once(':').ok_or_else(bad_cursor)?;
    let ts = ts.parse::<i64>().map_err(|_| bad_cursor())?;
    if !is_uuid(id) {
        return Err(bad_cursor());
    }
    Ok((ts, id.to_string()))
}

fn parse_time(field: &str, value: &str) -> Result<i64, Error> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Error::Validation(format!("{field}: expected an RFC 3339 time")))
}

/// What a role change did.
pub struct RoleChange {
    pub before: UserRow,
    pub after: UserRow,
    pub ended_sessions: Vec<String>,
}

/// Sets a user's roles; removing any role ends the user's sessions, so a demoted user cannot
/// go on acting with the old role. `actor` is the administrator's id (`None` from the
/// command line). Refuses to leave no enabled administrator.
pub fn apply_roles(
    conn: &mut DbConn,
    target: &str,
    roles: &[String],
    actor: Option<&str>,
    client: &ClientInfo,
    ts: i64,
) -> Result<RoleChange, Error> {
    validate_roles(roles)?;
    conn.write_transaction(|conn| {
        still_admin(conn, actor)?;
        let (before, after) = store::set_roles(conn, target, roles, ts)?;
        let old = before.role_list();
        let new = after.role_list();
        let removed: Vec<&String> = old.iter().filter(|r| !new.contains(r)).collect();
        let added: Vec<&String> = new.iter().filter(|r| !old.contains(r)).collect();
        for (kind, list) in [
            (AuditKind::RoleGranted, &added),
            (AuditKind::RoleRevoked, &removed),
        ] {
            for role in list {
                let event = AuditEvent::new(kind, client)
                    .user(target)
                    .detail(serde_json::json!({"role": role, "by": actor}));
                audit::record(conn, &event, ts)?;
            }
        }
        let ended_sessions = if removed.is_empty() {
            Vec::new()
        } else {
            store::revoke_user_sessions(conn, target, RevokeReason::RoleRevoked, None, ts)?
        };
        Ok(RoleChange {
            before,
            after,
            ended_sessions,
        })
    })
}

/// Inside the change's transaction, after the lock that serialises administrator changes:
/// an admin demoted or disabled while their request was in flight acts no more. `None` is the
/// command line (the operator of the machine).
fn still_admin(conn: &mut DbConn, actor: Option<&str>) -> Result<(), Error> {
    let Some(actor) = actor else {
        return Ok(());
    };
    store::lock_admin_changes(conn)?;
    match store::find_user(conn, actor)? {
        Some(user) if user.is_admin() => Ok(()),
        _ => Err(Error::Forbidden),
    }
}

/// Disables (ending every session at once) or enables a user.
pub fn apply_disabled(
    conn: &mut DbConn,
    target: &str,
    disabled: bool,
    actor: Option<&str>,
    client: &ClientInfo,
    ts: i64,
) -> Result<RoleChange, Error> {
    conn.write_transaction(|conn| {
        still_admin(conn, actor)?;
        let (before, after) = store::set_disabled(conn, target, disabled, ts)?;
        let ended_sessions = if disabled {
            store::revoke_user_sessions(conn, target, RevokeReason::UserDisabled, None, ts)?
        } else {
            Vec::new()
        };
        if before.disabled != after.disabled {
            let kind = if disabled {
                AuditKind::UserDisabled
            } else {
                AuditKind::UserEnabled
            };
            let event = AuditEvent::new(kind, client)
                .user(target)
                .detail(serde_json::json!({"by": actor, "sessions_ended": ended_sessions.len()}));
            audit::record(conn, &event, ts)?;
        }
        Ok(RoleChange {
            before,
            after,
            ended_sessions,
        })
    })
}

impl AuthService {
    /// The caller, if they are an enabled administrator according to the database.
    async fn require_admin(&self, caller: &AccessClaims) -> Result<UserRow, Error> {
        let id = caller.sub.clone();
        let user = self.db.run(move |conn| store::find_user(conn, &id)).await?;
        match user {
            Some(u) if u.is_admin() => Ok(u),
            Some(_) => Err(Error::Forbidden),
            None => Err(Error::TokenRevoked),
        }
    }

    pub async fn admin_list_users(
        &self,
        caller: &AccessClaims,
        username: Option<String>,
        cursor: Option<String>,
        limit: Option<i64>,
    ) -> Result<UserPage, Error> {
        self.require_admin(caller).await?;
        let limit = page_limit(limit)?;
        let after = cursor.as_deref().map(decode_user_cursor).transpose()?;
        if username.as_ref().is_some_and(|u| u.len() > 64) {
            return Err(Error::Validation("username: at most 64 characters".into()));
        }
        if username
            .as_ref()
            .is_some_and(|u| u.chars().any(char::is_control))
        {
            return Err(Error::Validation("username: no control characters".into()));
        }
        // One row more than asked tells whether there is a next page.
        let mut rows = self
            .db
            .run(move |conn| store::list_users(conn, username.as_deref(), after, limit + 1))
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(encode_user_cursor)
        } else {
            None
        };
        Ok(UserPage {
            users: rows.iter().map(AdminUserView::from).collect(),
            next_cursor,
        })
    }

    pub async fn admin_get_user(
        &self,
        caller: &AccessClaims,
        id: &str,
    ) -> Result<AdminUserView, Error> {
        self.require_admin(caller).await?;
        if !is_uuid(id) {
            return Err(Error::NotFound);
        }
        let id = id.to_string();
        let user = self
            .db
            .run(move |conn| store::find_user(conn, &id))
            .await?
            .ok_or(Error::NotFound)?;
        Ok(AdminUserView::from(&user))
    }

    fn forget_sessions(&self, change: &RoleChange, ts: i64) {
        for sid in &change.ended_sessions {
            self.remember_revocation(sid, ts);
        }
    }

    pub async fn admin_set_roles(
        &self,
        caller: &AccessClaims,
        target: &str,
        roles: Vec<String>,
        client: ClientInfo,
    ) -> Result<AdminUserView, Error> {
        let admin = self.require_admin(caller).await?;
        if !is_uuid(target) {
            return Err(Error::NotFound);
        }
        validate_roles(&roles)?;
        let target = target.to_string();
        let ts = now();
        let change = self
            .db
            .run(move |conn| apply_roles(conn, &target, &roles, Some(&admin.id), &client, ts))
            .await?;
        self.forget_sessions(&change, ts);
        log::info!(
            "roles changed: user_id={} by={} roles={}",
            change.after.id,
            caller.sub,
            change.after.roles
        );
        Ok(AdminUserView::from(&change.after))
    }

    pub async fn admin_set_disabled(
        &self,
        caller: &AccessClaims,
        target: &str,
        disabled: bool,
        client: ClientInfo,
    ) -> Result<AdminUserView, Error> {
        let admin = self.require_admin(caller).await?;
        if !is_uuid(target) {
            return Err(Error::NotFound);
        }
        let target = target.to_string();
        let ts = now();
        let change = self
            .db
            .run(move |conn| apply_disabled(conn, &target, disabled, Some(&admin.id), &client, ts))
            .await?;
        self.forget_sessions(&change, ts);
        log::info!(
            "user {}: user_id={} by={}",
            if disabled { "disabled" } else { "enabled" },
            change.after.id,
            caller.sub
        );
        Ok(AdminUserView::from(&change.after))
    }

    pub async fn admin_end_sessions(
        &self,
        caller: &AccessClaims,
        target: &str,
        client: ClientInfo,
    ) -> Result<usize, Error> {
        let admin = self.require_admin(caller).await?;
        if !is_uuid(target) {
            return Err(Error::NotFound);
        }
        let target = target.to_string();
        let ts = now();
        let ended = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    still_admin(conn, Some(&admin.id))?;
                    store::find_user(conn, &target)?.ok_or(Error::NotFound)?;
                    let ended = store::revoke_user_sessions(
                        conn,
                        &target,
                        RevokeReason::EndedByAdmin,
                        None,
                        ts,
                    )?;
                    for sid in &ended {
                        let event = AuditEvent::new(AuditKind::SessionRevoked, &client)
                            .user(&target)
                            .session(sid)
                            .detail(serde_json::json!({"by": admin.id}));
                        audit::record(conn, &event, ts)?;
                    }
                    Ok(ended)
                })
            })
            .await?;
        for sid in &ended {
            self.remember_revocation(sid, ts);
        }
        log::info!(
            "sessions ended by admin: by={} count={}",
            caller.sub,
            ended.len()
        );
        Ok(ended.len())
    }

    pub async fn admin_audit(
        &self,
        caller: &AccessClaims,
        filter: AuditFilter,
    ) -> Result<AuditPage, Error> {
        self.require_admin(caller).await?;
        let limit = page_limit(filter.limit)?;
        if filter.user_id.as_deref().is_some_and(|id| !is_uuid(id)) {
            return Err(Error::Validation("user_id: not a user id".into()));
        }
        let kind = match filter.kind.as_deref() {
            None => None,
            Some(k) => Some(
                AuditKind::parse(k)
                    .ok_or_else(|| Error::Validation(format!("kind: unknown event kind {k:?}")))?,
            ),
        };
        let query = AuditQuery {
            user_id: filter.user_id,
            kind,
            since: filter
                .since
                .as_deref()
                .map(|s| parse_time("since", s))
                .transpose()?,
            until: filter
                .until
                .as_deref()
                .map(|s| parse_time("until", s))
                .transpose()?,
            before_id: filter
                .cursor
                .as_deref()
                .map(|c| c.parse::<i64>().map_err(|_| bad_cursor()))
                .transpose()?,
            limit: limit + 1,
        };
        let mut rows = self.db.run(move |conn| audit::list(conn, &query)).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(AuditPage {
            events: rows.into_iter().map(AuditView::from).collect(),
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        assert!(validate_roles(&["user".into(), "admin".into(), "ops-team_2".into()]).is_ok());
        for bad in ["", "Admin", "1st", "a b", "a,b", &"x".repeat(33)] {
            assert!(validate_roles(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(validate_roles(&vec!["r".to_string(); 17]).is_err());
    }

    #[test]
    fn user_cursor_round_trip_and_garbage() {
        let id = uuid::Uuid::new_v4().to_string();
        let row = UserRow {
            id: id.clone(),
            username: "a".into(),
            username_key: "a".into(),
            email: None,
            password_hash: String::new(),
            roles: "user".into(),
            disabled: false,
            created_at: 42,
            updated_at: 42,
        };
        assert_eq!(
            decode_user_cursor(&encode_user_cursor(&row)).unwrap(),
            (42, id)
        );
        for bad in ["", "!!", "Zm9v", &URL_SAFE_NO_PAD.encode("x:y")] {
            assert!(decode_user_cursor(bad).is_err(), "{bad}");
        }
    }
}
