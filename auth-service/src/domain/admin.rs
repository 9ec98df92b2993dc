//! Administration: users, roles, disabling, ending sessions, reading the audit trail.
//!
//! Every operation re-checks the caller's `admin` role against the database (the claim in
//! the token could be up to `tokens.access_ttl` old) and acts only on the user named. The
//! role and disable changes are also plain functions over a connection, so that the command
//! line applies exactly the same rules.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::audit::{AuditEntry, AuditEvent, AuditKind, Outbox};
use crate::domain::directory::{ReportKind, UserReport};
use crate::domain::sessions::AccessClaims;
use crate::domain::{Context, Error, User};
use crate::model::{ClientInfo, Role, Roles, SessionId, UserId};
use crate::storage::DbConn;
use crate::storage::audit::{self as audit_table, AuditQuery};
use crate::storage::sessions::{self as session_table, RevokeReason};
use crate::storage::user_events;
use crate::storage::users::{self, UserRecord};

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;
/// Longest username filter accepted.
const MAX_FILTER_CHARS: usize = 64;

/// One page of a listing and where the next one starts.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Filters of the audit trail, parsed.
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub user_id: Option<UserId>,
    pub kind: Option<AuditKind>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// What a role or disable change did.
#[derive(Debug)]
pub struct UserChange {
    pub before: User,
    pub after: User,
    pub ended_sessions: Vec<SessionId>,
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

fn encode_user_cursor(u: &UserRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", u.created_at, u.id))
}

fn decode_user_cursor(cursor: &str) -> Result<(i64, UserId), Error> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad_cursor())?;
    let raw = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    let (ts, id) = raw.split_once(':').ok_or_else(bad_cursor)?;
    let ts = ts.parse::<i64>().map_err(|_| bad_cursor())?;
    let id = UserId::parse(id).map_err(|_| bad_cursor())?;
    Ok((ts, id))
}

/// Inside the change's transaction, after the lock that serialises administrator changes:
/// an admin demoted or disabled while their request was in flight acts no more. `None` is the
/// command line (the operator of the machine).
fn still_admin(conn: &mut DbConn, actor: Option<UserId>) -> Result<(), Error> {
    users::lock_admin_changes(conn)?;
    let Some(actor) = actor else {
        return Ok(());
    };
    match users::find(conn, &actor)? {
        Some(user) if user.is_admin() => Ok(()),
        _ => Err(Error::Forbidden),
    }
}

/// Refuses a change that would leave no enabled administrator.
fn keep_an_admin(conn: &mut DbConn, before: &UserRecord, stays_admin: bool) -> Result<(), Error> {
    if before.is_admin() && !stays_admin && !users::other_admin_exists(conn, &before.id)? {
        return Err(Error::LastAdmin);
    }
    Ok(())
}

/// Sets a user's roles; removing any role ends the user's sessions, so a demoted user cannot
/// go on acting with the old role. `actor` is the administrator (`None` from the command
/// line). Refuses to leave no enabled administrator.
pub fn apply_roles(
    conn: &mut DbConn,
    target: UserId,
    roles: &Roles,
    actor: Option<UserId>,
    client: &ClientInfo,
    now: i64,
    outbox: Outbox,
) -> Result<UserChange, Error> {
    conn.write_transaction(|conn| {
        still_admin(conn, actor)?;
        let before = users::find(conn, &target)?.ok_or(Error::NotFound)?;
        keep_an_admin(conn, &before, !before.disabled && roles.is_admin())?;
        users::set_roles(conn, &target, roles, now)?;
        let removed: Vec<&Role> = before.roles.missing_from(roles).collect();
        let added: Vec<&Role> = roles.missing_from(&before.roles).collect();
        // Sessions first, events last: recording takes the per-user events lock, which must
        // come after every row lock (see `AuditEvent::record`).
        let ended_sessions = if removed.is_empty() {
            Vec::new()
        } else {
            session_table::revoke_all_of_user(conn, &target, RevokeReason::RoleRevoked, None, now)?
        };
        for (kind, list) in [
            (AuditKind::RoleGranted, &added),
            (AuditKind::RoleRevoked, &removed),
        ] {
            for role in list {
                AuditEvent::new(kind, client)
                    .user(target)
                    .detail(serde_json::json!({"role": role, "by": actor}))
                    .record(conn, now, outbox)?;
            }
        }
        let after = users::find(conn, &target)?.ok_or(Error::NotFound)?;
        Ok(UserChange {
            before: before.into(),
            after: after.into(),
            ended_sessions,
        })
    })
}

/// Disables (ending every session at once) or enables a user.
pub fn apply_disabled(
    conn: &mut DbConn,
    target: UserId,
    disabled: bool,
    actor: Option<UserId>,
    client: &ClientInfo,
    now: i64,
    outbox: Outbox,
) -> Result<UserChange, Error> {
    conn.write_transaction(|conn| {
        still_admin(conn, actor)?;
        let before = users::find(conn, &target)?.ok_or(Error::NotFound)?;
        keep_an_admin(conn, &before, !disabled && before.roles.is_admin())?;
        users::set_disabled(conn, &target, disabled, now)?;
        let ended_sessions = if disabled {
            session_table::revoke_all_of_user(conn, &target, RevokeReason::UserDisabled, None, now)?
        } else {
            Vec::new()
        };
        if before.disabled != disabled {
            let kind = if disabled {
                AuditKind::UserDisabled
            } else {
                AuditKind::UserEnabled
            };
            AuditEvent::new(kind, client)
                .user(target)
                .detail(serde_json::json!({"by": actor, "sessions_ended": ended_sessions.len()}))
                .record(conn, now, outbox)?;
        }
        let after = users::find(conn, &target)?.ok_or(Error::NotFound)?;
        Ok(UserChange {
            before: before.into(),
            after: after.into(),
            ended_sessions,
        })
    })
}

/// Grants (`grant = true`) or removes one role of the user with this username or email:
/// the command line's `user grant-role` / `revoke-role`, in one serialised transaction.
pub fn change_role_by_login(
    conn: &mut DbConn,
    login: &str,
    role: &str,
    grant: bool,
    now: i64,
    outbox: Outbox,
) -> Result<UserChange, Error> {
    let role = Role::parse(role)?;
    conn.write_transaction(|conn| {
        users::lock_admin_changes(conn)?;
        let id = users::find_credentials(conn, login)?
            .ok_or(Error::NotFound)?
            .id;
        let mut roles = users::roles_of(conn, &id)?;
        if grant {
            roles.insert(role.clone())?;
        } else {
            roles.remove(&role);
        }
        apply_roles(conn, id, &roles, None, &ClientInfo::default(), now, outbox)
    })
}

pub struct Admin {
    ctx: Context,
}

impl Admin {
    pub(crate) fn new(ctx: Context) -> Admin {
        Admin { ctx }
    }

    /// Where users live.
    pub fn directory(&self) -> &crate::domain::directory::Directory {
        &self.ctx.users
    }

    /// Refuses (403) a caller who is not an enabled administrator according to the
    /// database. Every operation below checks this itself; the HTTP layer calls it first
    /// where it must parse input after the check.
    pub async fn ensure_admin(&self, caller: &AccessClaims) -> Result<(), Error> {
        self.require_admin(caller).await.map(|_| ())
    }

    /// The caller, if they are an enabled administrator according to the database.
    async fn require_admin(&self, caller: &AccessClaims) -> Result<UserId, Error> {
        if let Some(remote) = self.ctx.users.remote() {
            // The roles and status the user service holds now, not those in the token.
            return match remote.find(&caller.sub).await? {
                Some(u) if !u.disabled && u.roles.is_admin() => Ok(u.id),
                Some(u) if !u.disabled => Err(Error::Forbidden),
                _ => Err(Error::TokenRevoked),
            };
        }
        let id = caller.sub;
        let user = self.ctx.db.run(move |conn| users::find(conn, &id)).await?;
        match user {
            Some(u) if u.is_admin() => Ok(u.id),
            Some(_) => Err(Error::Forbidden),
            None => Err(Error::TokenRevoked),
        }
    }

    pub async fn list_users(
        &self,
        caller: &AccessClaims,
        username: Option<String>,
        cursor: Option<String>,
        limit: Option<i64>,
    ) -> Result<Page<User>, Error> {
        self.require_admin(caller).await?;
        if self.ctx.users.remote().is_some() {
            return Err(Error::ManagedByUserService);
        }
        let limit = page_limit(limit)?;
        let after = cursor.as_deref().map(decode_user_cursor).transpose()?;
        if let Some(u) = &username {
            if u.chars().count() > MAX_FILTER_CHARS {
                return Err(Error::Validation(format!(
                    "username: at most {MAX_FILTER_CHARS} characters"
                )));
            }
            if u.chars().any(char::is_control) {
                return Err(Error::Validation("username: no control characters".into()));
            }
        }
        // One row more than asked tells whether there is a next page.
        let mut rows = self
            .ctx
            .db
            .run(move |conn| users::list(conn, username.as_deref(), after, limit + 1))
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(encode_user_cursor)
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(User::from).collect(),
            next_cursor,
        })
    }

    pub async fn get_user(&self, caller: &AccessClaims, id: UserId) -> Result<User, Error> {
        self.require_admin(caller).await?;
        if let Some(remote) = self.ctx.users.remote() {
            return remote.find(&id).await?.ok_or(Error::NotFound);
        }
        let user = self
            .ctx
            .db
            .run(move |conn| users::find(conn, &id))
            .await?
            .ok_or(Error::NotFound)?;
        Ok(User::from(user))
    }

    pub async fn set_roles(
        &self,
        caller: &AccessClaims,
        target: UserId,
        roles: &[String],
        client: ClientInfo,
    ) -> Result<User, Error> {
        let admin = self.require_admin(caller).await?;
        if self.ctx.users.remote().is_some() {
            return Err(Error::ManagedByUserService);
        }
        let roles = Roles::parse(roles)?;
        let now = self.ctx.now();
        let outbox = self.ctx.outbox;
        let change = self
            .ctx
            .db
            .write(move |conn| apply_roles(conn, target, &roles, Some(admin), &client, now, outbox))
            .await?;
        self.ctx.record_revocations(&change.ended_sessions, now);
        log::info!(
            "roles changed: user_id={} by={admin} roles={}",
            change.after.id,
            change.after.roles
        );
        Ok(change.after)
    }

    pub async fn set_disabled(
        &self,
        caller: &AccessClaims,
        target: UserId,
        disabled: bool,
        client: ClientInfo,
    ) -> Result<User, Error> {
        let admin = self.require_admin(caller).await?;
        if self.ctx.users.remote().is_some() {
            return Err(Error::ManagedByUserService);
        }
        let now = self.ctx.now();
        let outbox = self.ctx.outbox;
        let change = self
            .ctx
            .db
            .write(move |conn| {
                apply_disabled(conn, target, disabled, Some(admin), &client, now, outbox)
            })
            .await?;
        self.ctx.record_revocations(&change.ended_sessions, now);
        log::info!(
            "user {}: user_id={} by={admin}",
            if disabled { "disabled" } else { "enabled" },
            change.after.id
        );
        Ok(change.after)
    }

    /// Ends every session of a user; returns how many.
    pub async fn end_sessions(
        &self,
        caller: &AccessClaims,
        target: UserId,
        client: ClientInfo,
    ) -> Result<usize, Error> {
        let admin = self.require_admin(caller).await?;
        let now = self.ctx.now();
        let outbox = self.ctx.outbox;
        let local = self.ctx.users.remote().is_none();
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    // With a user service, the check above asked it; the target may have
                    // sessions here whatever it says of them.
                    if local {
                        still_admin(conn, Some(admin))?;
                        users::find(conn, &target)?.ok_or(Error::NotFound)?;
                    }
                    let ended = session_table::revoke_all_of_user(
                        conn,
                        &target,
                        RevokeReason::EndedByAdmin,
                        None,
                        now,
                    )?;
                    for sid in &ended {
                        AuditEvent::new(AuditKind::SessionRevoked, &client)
                            .user(target)
                            .session(*sid)
                            .detail(serde_json::json!({ "by": admin }))
                            .record(conn, now, outbox)?;
                    }
                    Ok::<_, Error>(ended)
                })
            })
            .await?;
        self.ctx.record_revocations(&ended, now);
        log::info!("sessions ended by admin: by={admin} count={}", ended.len());
        Ok(ended.len())
    }

    /// Applies what the user service reported (`/internal/user-events`, remote users):
    /// every session of the user ends at once, and logins whose credentials it checked
    /// before now are checked again. A repeated report changes nothing. Returns how many
    /// sessions ended, `None` for a repeat.
    pub async fn apply_user_report(
        &self,
        report: UserReport,
        client: ClientInfo,
    ) -> Result<Option<usize>, Error> {
        let (now, outbox) = (self.ctx.now(), self.ctx.outbox);
        let (kind, reason) = match report.kind {
            ReportKind::UserDisabled => (AuditKind::UserDisabled, RevokeReason::UserDisabled),
            ReportKind::RoleRevoked => (AuditKind::RoleRevoked, RevokeReason::RoleRevoked),
            ReportKind::PasswordChanged => {
                (AuditKind::PasswordChanged, RevokeReason::PasswordChanged)
            }
        };
        let user_id = report.user_id;
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    user_events::lock_user(conn, &user_id, true)?;
                    let event_id = report.event_id.to_string();
                    if !user_events::insert(conn, &event_id, &user_id, report.kind.as_str(), now)? {
                        return Ok::<_, Error>(None);
                    }
                    let ended =
                        session_table::revoke_all_of_user(conn, &user_id, reason, None, now)?;
                    let mut detail = serde_json::json!({
                        "via": "user_service",
                        "report_id": event_id,
                        "sessions_ended": ended.len(),
                    });
                    if let Some(role) = &report.role {
                        detail["role"] = serde_json::Value::from(role.as_str());
                    }
                    if let Some(at) = report.reported_at {
                        detail["reported_at"] = serde_json::Value::from(at);
                    }
                    AuditEvent::new(kind, &client)
                        .user(user_id)
                        .detail(detail)
                        .record(conn, now, outbox)?;
                    Ok(Some(ended))
                })
            })
            .await?;
        let Some(ended) = ended else {
            log::info!(
                "user service report repeated, nothing to do: user_id={user_id} kind={}",
                report.kind.as_str()
            );
            return Ok(None);
        };
        self.ctx.record_revocations(&ended, now);
        log::info!(
            "user service reported {}: user_id={user_id} sessions ended={}",
            report.kind.as_str(),
            ended.len()
        );
        Ok(Some(ended.len()))
    }

    pub async fn audit(
        &self,
        caller: &AccessClaims,
        filter: AuditFilter,
    ) -> Result<Page<AuditEntry>, Error> {
        self.require_admin(caller).await?;
        let limit = page_limit(filter.limit)?;
        let query = AuditQuery {
            user_id: filter.user_id,
            kind: filter.kind.map(AuditKind::as_str),
            since: filter.since,
            until: filter.until,
            before_id: filter
                .cursor
                .as_deref()
                .map(|c| c.parse::<i64>().map_err(|_| bad_cursor()))
                .transpose()?,
            limit: limit + 1,
        };
        let mut rows = self
            .ctx
            .db
            .run(move |conn| audit_table::list(conn, &query))
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(AuditEntry::from).collect(),
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_cursor_round_trip_and_garbage() {
        let id = UserId::random();
        let row = UserRecord {
            id,
            username: "a".into(),
            email: None,
            password_hash: String::new(),
            roles: Roles::default_for_new_user(),
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
