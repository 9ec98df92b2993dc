//! Accounts: registration, and the caller's own profile, password and sessions. The user is
//! always the one named by the verified access token, never by anything in the request.

use std::sync::Arc;

use secrecy::SecretString;

use crate::domain::audit::{AuditEvent, AuditKind, Outbox};
use crate::domain::limits::Limiter;
use crate::domain::sessions::AccessClaims;
use crate::domain::validation::{normalize_email, validate_password, validate_username};
use crate::domain::{Context, Error, User};
use crate::model::{ClientInfo, Role, Roles, SessionId, UserId};
use crate::security::passwords::Passwords;
use crate::storage::DbConn;
use crate::storage::sessions::{self as session_table, RevokeReason, SessionRecord};
use crate::storage::user_service::{Created, PasswordChange, UserService};
use crate::storage::users::{self, Inserted, NewUser};

/// A registration request.
pub struct Registration {
    pub username: String,
    pub password: SecretString,
    pub email: Option<String>,
}

/// One of the caller's live sessions.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: SessionId,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl From<SessionRecord> for SessionSummary {
    fn from(s: SessionRecord) -> Self {
        SessionSummary {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent,
            ip: s.ip,
        }
    }
}

pub struct Accounts {
    ctx: Context,
    passwords: Passwords,
    login_throttle: Arc<Limiter>,
    /// Registrations per address; `None` when `register.max_per_ip` is 0.
    register_throttle: Option<Arc<Limiter>>,
}

/// Stores a new user with an audit record, in one transaction. `via` names where the
/// registration came from when it was not the public API (the command line).
pub(crate) fn store_new_user(
    conn: &mut DbConn,
    user: &NewUser<'_>,
    client: &ClientInfo,
    via: Option<&str>,
    actor_roles: &Roles,
    outbox: Outbox,
) -> Result<(), Error> {
    conn.write_transaction(|conn| {
        match users::insert(conn, user)? {
            Inserted::Yes => {}
            Inserted::UsernameTaken => return Err(Error::UsernameTaken),
            Inserted::EmailTaken => return Err(Error::EmailTaken),
        }
        let detail = match via {
            Some(via) => serde_json::json!({ "via": via }),
            None => serde_json::json!({}),
        };
        AuditEvent::new(AuditKind::Registered, client)
            .user(user.id)
            .detail(detail)
            .record(conn, user.now, outbox)?;
        for role in actor_roles.iter().filter(|r| **r != Role::user()) {
            AuditEvent::new(AuditKind::RoleGranted, client)
                .user(user.id)
                .detail(serde_json::json!({"role": role, "by": null, "via": via}))
                .record(conn, user.now, outbox)?;
        }
        Ok(())
    })
}

/// Checks what a new account may be called; returns the normalised email.
pub(crate) fn validate_registration(
    username: &str,
    password: &SecretString,
    email: Option<&str>,
) -> Result<Option<String>, Error> {
    validate_username(username)?;
    validate_password(password)?;
    email.map(normalize_email).transpose()
}

impl Accounts {
    pub(crate) fn new(
        ctx: Context,
        passwords: Passwords,
        login_throttle: Arc<Limiter>,
        register_throttle: Option<Arc<Limiter>>,
    ) -> Accounts {
        Accounts {
            ctx,
            passwords,
            login_throttle,
            register_throttle,
        }
    }

    pub async fn register(&self, input: Registration, client: ClientInfo) -> Result<User, Error> {
        let email =
            validate_registration(&input.username, &input.password, input.email.as_deref())?;
        // Every registration costs a password hash: bound them per address. Counted as it
        // starts and whatever its outcome (a taken name is a probe; a request abandoned
        // mid-way may still have created the user).
        if let Some(throttle) = &self.register_throttle {
            throttle.begin(client.ip, "").await?.keep();
        }
        if let Some(remote) = self.ctx.users.remote() {
            return self.register_remotely(remote, input, email, client).await;
        }
        let hash = self.passwords.hash(input.password).await?;
        let now = self.ctx.now();
        let id = UserId::random();
        let username = input.username;
        let outbox = self.ctx.outbox;
        let user = self
            .ctx
            .db
            .write(move |conn| {
                let roles = Roles::default_for_new_user();
                let new = NewUser {
                    id,
                    username: &username,
                    email: email.as_deref(),
                    password_hash: &hash,
                    roles: &roles,
                    now,
                };
                store_new_user(conn, &new, &client, None, &roles, outbox)?;
                users::find(conn, &id)?.ok_or(Error::NotFound)
            })
            .await?;
        log::info!("user registered: user_id={}", user.id);
        Ok(User::from(user))
    }

    /// Registration with a user service: it stores the user (and hashes the password);
    /// this service records only that it happened.
    async fn register_remotely(
        &self,
        remote: &UserService,
        input: Registration,
        email: Option<String>,
        client: ClientInfo,
    ) -> Result<User, Error> {
        let user = match remote
            .create(&input.username, &input.password, email.as_deref())
            .await?
        {
            Created::User(user) => user,
            Created::Taken => return Err(Error::UsernameTaken),
            Created::Refused(why) => return Err(Error::Validation(why)),
        };
        let (id, now, outbox) = (user.id, self.ctx.now(), self.ctx.outbox);
        self.ctx
            .db
            .write(move |conn| {
                AuditEvent::new(AuditKind::Registered, &client)
                    .user(id)
                    .detail(serde_json::json!({ "via": "user_service" }))
                    .record(conn, now, outbox)
            })
            .await?;
        log::info!("user registered at the user service: user_id={id}");
        Ok(user)
    }

    pub async fn me(&self, caller: &AccessClaims) -> Result<User, Error> {
        if let Some(remote) = self.ctx.users.remote() {
            return match remote.find(&caller.sub).await? {
                Some(user) => Ok(user),
                None => Err(Error::TokenRevoked),
            };
        }
        let id = caller.sub;
        let user = self
            .ctx
            .db
            .run(move |conn| users::find(conn, &id))
            .await?
            .ok_or(Error::TokenRevoked)?;
        Ok(User::from(user))
    }

    /// Changes the caller's password after checking the current one, and ends every other
    /// session of theirs.
    pub async fn change_password(
        &self,
        caller: &AccessClaims,
        current: SecretString,
        new: SecretString,
        client: ClientInfo,
    ) -> Result<(), Error> {
        // Guessing the current password through a stolen access token is throttled like login.
        let throttle_key = format!("#{}", caller.sub);
        let attempt = self.login_throttle.begin(client.ip, &throttle_key).await?;
        if let Some(remote) = self.ctx.users.remote() {
            validate_password(&new)?;
            // The caller's other sessions end first, then the user service checks the
            // current password and stores the new one. So once the password has changed,
            // no session opened with the old one is left, whatever fails afterwards. (Ending
            // them is nothing a holder of this access token could not do with /logout/all.)
            let ended = self
                .end_sessions_for_password_change(caller, &client)
                .await?;
            match remote.change_password(&caller.sub, &current, &new).await? {
                PasswordChange::Changed => attempt.succeeded(),
                PasswordChange::InvalidCredentials => {
                    attempt.failed();
                    return Err(Error::InvalidCredentials);
                }
                PasswordChange::Refused(why) => return Err(Error::Validation(why)),
            }
            let (user_id, keep, now, outbox) =
                (caller.sub, caller.sid, self.ctx.now(), self.ctx.outbox);
            let recorded = self
                .ctx
                .db
                .write(move |conn| {
                    AuditEvent::new(AuditKind::PasswordChanged, &client)
                        .user(user_id)
                        .session(keep)
                        .detail(serde_json::json!({
                            "sessions_ended": ended,
                            "via": "user_service",
                        }))
                        .record(conn, now, outbox)
                })
                .await;
            if let Err(e) = recorded {
                // The password has changed and the other sessions are gone: answering an
                // error would only make the client retry with the old password.
                log::error!(
                    "password changed but not recorded in the audit trail: user_id={user_id}: {e}"
                );
            }
            log::info!(
                "password changed at the user service: user_id={user_id} other sessions ended={ended}"
            );
            return Ok(());
        }
        let id = caller.sub;
        let user = self.ctx.db.run(move |conn| users::find(conn, &id)).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.passwords.verify(current, stored).await?;
        match user {
            Some(u) if verified.matches && !u.disabled => u,
            _ => {
                attempt.failed();
                return Err(Error::InvalidCredentials);
            }
        };
        attempt.succeeded();
        validate_password(&new)?;
        let hash = self.passwords.hash(new).await?;
        self.end_other_sessions(caller, hash, client).await
    }

    /// Before a password change at the user service: ends every other session of the
    /// caller, each recorded as ended by its user. Returns how many ended.
    async fn end_sessions_for_password_change(
        &self,
        caller: &AccessClaims,
        client: &ClientInfo,
    ) -> Result<usize, Error> {
        let (user_id, keep, now, outbox) =
            (caller.sub, caller.sid, self.ctx.now(), self.ctx.outbox);
        let client = client.clone();
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let ended = session_table::revoke_all_of_user(
                        conn,
                        &user_id,
                        RevokeReason::PasswordChanged,
                        Some(&keep),
                        now,
                    )?;
                    for sid in &ended {
                        AuditEvent::new(AuditKind::SessionRevoked, &client)
                            .user(user_id)
                            .session(*sid)
                            .detail(serde_json::json!({"by": user_id, "for": "password_change"}))
                            .record(conn, now, outbox)?;
                    }
                    Ok::<_, Error>(ended)
                })
            })
            .await?;
        self.ctx.record_revocations(&ended, now);
        Ok(ended.len())
    }

    /// After a password change of a built-in user: stores the new hash, ends every other
    /// session of the caller, and records the change.
    async fn end_other_sessions(
        &self,
        caller: &AccessClaims,
        hash: String,
        client: ClientInfo,
    ) -> Result<(), Error> {
        let (user_id, keep, now) = (caller.sub, caller.sid, self.ctx.now());
        let outbox = self.ctx.outbox;
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    users::update_password_hash(conn, &user_id, &hash, now)?;
                    let ended = session_table::revoke_all_of_user(
                        conn,
                        &user_id,
                        RevokeReason::PasswordChanged,
                        Some(&keep),
                        now,
                    )?;
                    AuditEvent::new(AuditKind::PasswordChanged, &client)
                        .user(user_id)
                        .session(keep)
                        .detail(serde_json::json!({"sessions_ended": ended.len()}))
                        .record(conn, now, outbox)?;
                    Ok::<_, Error>(ended)
                })
            })
            .await?;
        self.ctx.record_revocations(&ended, now);
        log::info!(
            "password changed: user_id={user_id} other sessions ended={}",
            ended.len()
        );
        Ok(())
    }

    pub async fn my_sessions(&self, caller: &AccessClaims) -> Result<Vec<SessionSummary>, Error> {
        let (id, now, refresh_ttl) = (caller.sub, self.ctx.now(), self.ctx.lifetimes.refresh_ttl);
        let rows = self
            .ctx
            .db
            .run(move |conn| session_table::live_of_user(conn, &id, now, refresh_ttl))
            .await?;
        Ok(rows.into_iter().map(SessionSummary::from).collect())
    }

    /// Ends one of the caller's sessions. Anyone else's session id is answered 404 and
    /// left alone.
    pub async fn end_my_session(
        &self,
        caller: &AccessClaims,
        target: SessionId,
        client: ClientInfo,
    ) -> Result<(), Error> {
        let (user_id, now) = (caller.sub, self.ctx.now());
        let outbox = self.ctx.outbox;
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let ended = session_table::revoke_own(
                        conn,
                        &user_id,
                        &target,
                        RevokeReason::EndedByUser,
                        now,
                    )?;
                    if ended {
                        AuditEvent::new(AuditKind::SessionRevoked, &client)
                            .user(user_id)
                            .session(target)
                            .detail(serde_json::json!({"by": user_id}))
                            .record(conn, now, outbox)?;
                    }
                    Ok::<_, Error>(ended)
                })
            })
            .await?;
        if !ended {
            return Err(Error::NotFound);
        }
        self.ctx.record_revocations([&target], now);
        log::info!("session ended by its user: user_id={user_id} sid={target}");
        Ok(())
    }

    /// Ends every session of the caller, the current one included.
    pub async fn logout_all(&self, caller: &AccessClaims, client: ClientInfo) -> Result<(), Error> {
        let (user_id, current, now) = (caller.sub, caller.sid, self.ctx.now());
        let outbox = self.ctx.outbox;
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let ended = session_table::revoke_all_of_user(
                        conn,
                        &user_id,
                        RevokeReason::LogoutAll,
                        None,
                        now,
                    )?;
                    AuditEvent::new(AuditKind::LoggedOutAll, &client)
                        .user(user_id)
                        .session(current)
                        .detail(serde_json::json!({"sessions_ended": ended.len()}))
                        .record(conn, now, outbox)?;
                    Ok::<_, Error>(ended)
                })
            })
            .await?;
        // The caller's own session may have been revoked already; its tokens die either way.
        self.ctx
            .record_revocations(ended.iter().chain([&current]), now);
        log::info!(
            "logout all: user_id={user_id} sessions ended={}",
            ended.len()
        );
        Ok(())
    }
}
