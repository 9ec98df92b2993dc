//! Sessions: log in, rotate refresh tokens with reuse detection, log out, and verify access
//! tokens without the database.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::Lifetimes;
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::directory::ReportKind;
use crate::domain::limits::{Attempt, Limiter};
use crate::domain::validation::MAX_EMAIL_CHARS;
use crate::domain::{Context, Error};
use crate::metrics::Metrics;
use crate::model::Roles;
use crate::model::{ClientInfo, SessionId, TokenId, User, UserId};
use crate::security::passwords::{MAX_PASSWORD_CHARS, Passwords};
use crate::security::tokens::{
    AccessGrant, Expiry, RefreshClaims, RefreshGrant, TokenError, Tokens,
};
use crate::security::verify_cache::{self, VerifiedTokens};
use crate::storage::refresh_tokens::{self, RefreshTokenRecord, Rotation, RotationRequest};
use crate::storage::sessions::{self as session_table, NewSession, RevokeReason};
use crate::storage::user_events;
use crate::storage::user_service::UserService;
use crate::storage::users::{self, UserRecord};
use crate::storage::{DbConn, StorageError};

pub use crate::security::tokens::AccessClaims;
pub use crate::security::verify_cache::{Answer, Verified};

/// What introspection found (RFC 7662).
#[derive(Debug)]
pub enum Introspection {
    /// A good access token (the same answer `/verify` gives).
    Access(Arc<Verified>),
    /// A refresh token that would rotate now: genuine, unexpired, unused, its session live.
    Refresh(RefreshClaims),
    /// A good access token of a machine client (client credentials).
    Client(crate::security::tokens::ClientClaims),
    Inactive,
}

/// A fresh token pair. `Debug` shows no token.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    /// Seconds the refresh token lives.
    pub refresh_expires_in: i64,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish()
    }
}

pub struct Sessions {
    ctx: Context,
    passwords: Passwords,
    tokens: Arc<Tokens>,
    throttle: Arc<Limiter>,
    verified: VerifiedTokens,
}

impl Sessions {
    pub(crate) fn new(
        ctx: Context,
        passwords: Passwords,
        tokens: Arc<Tokens>,
        throttle: Arc<Limiter>,
        verified: VerifiedTokens,
    ) -> Sessions {
        Sessions {
            ctx,
            passwords,
            tokens,
            throttle,
            verified,
        }
    }

    /// Checks credentials and opens a session. Every failure is the same
    /// `invalid_credentials`, reached through the same amount of hashing.
    pub async fn login(
        &self,
        login: &str,
        password: SecretString,
        client: ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        let result = self.check_and_open(login, password, client).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::InvalidCredentials) => "failed",
            Err(Error::TooManyAttempts { .. }) => "throttled",
            Err(Error::Overloaded) => "overloaded",
            Err(_) => "unavailable",
        };
        Metrics::count(&self.ctx.metrics.logins, outcome);
        result
    }

    async fn check_and_open(
        &self,
        login: &str,
        password: SecretString,
        client: ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        if login.is_empty()
            || login.chars().count() > MAX_EMAIL_CHARS
            || password.expose_secret().chars().count() > MAX_PASSWORD_CHARS
        {
            return Err(Error::InvalidCredentials);
        }
        // No username or email holds a control character, and PostgreSQL refuses NUL in
        // text: such a login matches nobody, but still goes through the dummy hash.
        let matchable = !login.chars().any(char::is_control);
        let tried: String = login
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect();
        if let Some(remote) = self.ctx.users.remote() {
            let remote = remote.clone();
            return self
                .check_remotely(&remote, login, matchable, tried, password, client)
                .await;
        }
        let found = if matchable {
            let login = login.to_string();
            self.ctx
                .db
                .run(move |conn| users::find_credentials(conn, &login))
                .await?
        } else {
            None
        };
        // One bucket per account, however it is named (username or email); one per typed
        // name for names that match nobody.
        let bucket = match &found {
            Some(c) => format!("user:{}", c.id),
            None => format!("name:{tried}"),
        };
        let attempt = self.throttle.begin(client.ip, &bucket).await?;
        let stored = found.as_ref().map(|c| c.password_hash.clone());
        let verified = self.passwords.verify(password.clone(), stored).await?;
        let user_id = match &found {
            Some(c) if verified.matches && !c.disabled => c.id,
            _ => {
                attempt.failed();
                self.record_failed_login(found.map(|c| c.id), &tried, &client)
                    .await?;
                return Err(Error::InvalidCredentials);
            }
        };
        if verified.needs_rehash {
            self.upgrade_hash(user_id, password).await;
        }
        let opened = self.open_session(user_id, &client).await;
        self.settle_login(opened, attempt, user_id, &tried, &client)
            .await
    }

    /// The end of a login whose credentials were right: the throttle learns the outcome. A
    /// user disabled (or removed) while the credentials were being checked is refused as
    /// wrong credentials would be, and recorded as a failed login.
    async fn settle_login(
        &self,
        opened: Result<IssuedTokens, Error>,
        attempt: Attempt<'_>,
        user_id: UserId,
        tried: &str,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        match opened {
            Ok(tokens) => {
                attempt.succeeded();
                Ok(tokens)
            }
            Err(Error::InvalidCredentials) => {
                attempt.failed();
                self.record_failed_login(Some(user_id), tried, client)
                    .await?;
                Err(Error::InvalidCredentials)
            }
            Err(e) => Err(e),
        }
    }

    async fn record_failed_login(
        &self,
        user_id: Option<UserId>,
        tried: &str,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        log::info!(
            "login failed: user_id={}",
            user_id.map_or_else(|| "<unknown>".to_string(), |id| id.to_string())
        );
        let (client, now) = (client.clone(), self.ctx.now());
        // With a user service, this database holds no user names, typed ones included.
        let detail = match self.ctx.users.remote() {
            None => serde_json::json!({ "username": tried }),
            Some(_) => serde_json::json!({ "via": "user_service" }),
        };
        let outbox = self.ctx.outbox;
        self.ctx
            .db
            .write(move |conn| {
                let mut event = AuditEvent::new(AuditKind::LoginFailed, &client).detail(detail);
                event.user_id = user_id;
                event.record(conn, now, outbox)
            })
            .await
    }

    /// Opens a session for a user whose credentials were just checked. The user is read
    /// again inside the transaction that creates the session, so an account disabled (or a
    /// role removed) while the password was being hashed is seen: a disabled user gets
    /// `InvalidCredentials`, and the tokens carry the roles as they are now.
    pub async fn open_session(
        &self,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        let now = self.ctx.now();
        let lifetimes = self.ctx.lifetimes;
        let client = client.clone();
        let outbox = self.ctx.outbox;
        let opened = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    // Held until commit: a disable or role change waits for this session to
                    // exist (and so ends it), or lands first and is read here.
                    users::lock_for_session(conn, &user_id)?;
                    let user = match users::find(conn, &user_id)? {
                        Some(user) if !user.disabled => user,
                        _ => return Ok(None),
                    };
                    let first = insert_session(conn, user_id, now, lifetimes, &client)?;
                    AuditEvent::new(AuditKind::LoginSucceeded, &client)
                        .user(user_id)
                        .session(first.session_id)
                        .record(conn, now, outbox)?;
                    Ok::<_, Error>(Some((user, first)))
                })
            })
            .await?;
        let Some((user, first)) = opened else {
            return Err(Error::InvalidCredentials);
        };
        log::info!("login: user_id={} sid={}", user.id, first.session_id);
        self.issue(user.id, &user.username, &user.roles, &first, now)
    }

    /// Login with users in a user service: it checks the credentials (and answers the same
    /// for an unknown user, a wrong password and a disabled user); the throttles here count
    /// per typed name, since the user's id is known only after the check.
    async fn check_remotely(
        &self,
        remote: &UserService,
        login: &str,
        matchable: bool,
        tried: String,
        password: SecretString,
        client: ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        let bucket = format!("name:{}", tried.to_lowercase());
        let attempt = self.throttle.begin(client.ip, &bucket).await?;
        let mark = self.ctx.db.run(user_events::watermark).await?;
        let found = if matchable {
            remote.verify_credentials(login, &password).await?
        } else {
            None
        };
        let Some(user) = found.filter(|u| !u.disabled) else {
            attempt.failed();
            self.record_failed_login(None, &tried, &client).await?;
            return Err(Error::InvalidCredentials);
        };
        let user_id = user.id;
        let opened = self.open_remote_session(remote, user, mark, &client).await;
        self.settle_login(opened, attempt, user_id, &tried, &client)
            .await
    }

    /// Opens a session for a user the user service vouched for after reports up to `mark`
    /// were stored here. If it reported a change to that user since (a disable, a removed
    /// role), the user is read again first, so the tokens never carry what was true before
    /// the report.
    async fn open_remote_session(
        &self,
        remote: &UserService,
        mut user: User,
        mut mark: i64,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        for _ in 0..2 {
            let now = self.ctx.now();
            let lifetimes = self.ctx.lifetimes;
            let (client_info, outbox, user_id) = (client.clone(), self.ctx.outbox, user.id);
            let opened = self
                .ctx
                .db
                .write(move |conn| {
                    conn.write_transaction(|conn| {
                        // Shared with other logins, exclusive with reports about this user.
                        user_events::lock_user(conn, &user_id, false)?;
                        let reported = user_events::kinds_after(conn, &user_id, mark)?;
                        if reported
                            .iter()
                            .any(|k| k == ReportKind::PasswordChanged.as_str())
                        {
                            // The password just checked may be the one that was replaced.
                            return Ok::<_, Error>(Opening::PasswordChanged);
                        }
                        if !reported.is_empty() {
                            return Ok(Opening::ReadAgain);
                        }
                        let first = insert_session(conn, user_id, now, lifetimes, &client_info)?;
                        AuditEvent::new(AuditKind::LoginSucceeded, &client_info)
                            .user(user_id)
                            .session(first.session_id)
                            .record(conn, now, outbox)?;
                        Ok(Opening::Opened(first))
                    })
                })
                .await?;
            match opened {
                Opening::Opened(first) => {
                    log::info!("login: user_id={} sid={}", user.id, first.session_id);
                    return self.issue(user.id, &user.username, &user.roles, &first, now);
                }
                Opening::PasswordChanged => return Err(Error::InvalidCredentials),
                Opening::ReadAgain => {}
            }
            mark = self.ctx.db.run(user_events::watermark).await?;
            user = match remote.find(&user.id).await? {
                Some(fresh) if !fresh.disabled => fresh,
                _ => return Err(Error::InvalidCredentials),
            };
        }
        // Reported on twice within moments: let the client try again.
        Err(Error::Unavailable(StorageError::RemoteUnavailable(
            "the user changed while logging in".into(),
        )))
    }

    /// Re-hashes a password whose stored hash uses old parameters. Failure only costs the
    /// upgrade, never the login.
    async fn upgrade_hash(&self, user_id: UserId, password: SecretString) {
        let result = async {
            let hash = self.passwords.hash(password).await?;
            let now = self.ctx.now();
            self.ctx
                .db
                .write(move |conn| users::update_password_hash(conn, &user_id, &hash, now))
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => log::info!("password hash upgraded: user_id={user_id}"),
            Err(e) => log::warn!("password hash upgrade failed: user_id={user_id}: {e}"),
        }
    }

    /// Signs the token pair of a rotation for the user as this database (built-in users) or
    /// the user service describes them.
    fn issue_to(
        &self,
        local: Option<UserRecord>,
        remote: Option<User>,
        rt: &RefreshTokenRecord,
        now: i64,
    ) -> Result<IssuedTokens, Error> {
        match (local, remote) {
            (Some(u), _) => self.issue(u.id, &u.username, &u.roles, rt, now),
            (None, Some(u)) => self.issue(u.id, &u.username, &u.roles, rt, now),
            (None, None) => Err(Error::Internal(
                "a rotation without the user it belongs to".into(),
            )),
        }
    }

    /// Ends every session of a user the user service no longer knows or has disabled, as
    /// its report would have.
    async fn end_sessions_of_gone_user(
        &self,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        let (now, outbox, client) = (self.ctx.now(), self.ctx.outbox, client.clone());
        let ended = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let ended = session_table::revoke_all_of_user(
                        conn,
                        &user_id,
                        RevokeReason::UserDisabled,
                        None,
                        now,
                    )?;
                    if !ended.is_empty() {
                        AuditEvent::new(AuditKind::UserDisabled, &client)
                            .user(user_id)
                            .detail(serde_json::json!({
                                "via": "refresh",
                                "sessions_ended": ended.len(),
                            }))
                            .record(conn, now, outbox)?;
                    }
                    Ok::<_, Error>(ended)
                })
            })
            .await?;
        self.ctx.record_revocations(&ended, now);
        log::info!(
            "user disabled or gone at the user service: user_id={user_id} sessions ended={}",
            ended.len()
        );
        Ok(())
    }

    /// Signs the token pair of refresh token `rt` for this user, with the roles given.
    fn issue(
        &self,
        user_id: UserId,
        username: &str,
        roles: &Roles,
        rt: &RefreshTokenRecord,
        now: i64,
    ) -> Result<IssuedTokens, Error> {
        let access_token = self.tokens.issue_access(
            AccessGrant {
                user_id,
                username,
                roles: roles.names(),
                session_id: rt.session_id,
            },
            now,
        )?;
        let refresh_token = self.tokens.sign_refresh(&RefreshGrant {
            jti: rt.jti,
            session_id: rt.session_id,
            user_id,
            issued_at: rt.issued_at,
            expires_at: rt.expires_at,
        })?;
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            expires_in: self.tokens.access_ttl(),
            refresh_expires_in: (rt.expires_at - now).max(0),
        })
    }

    /// Rotates a refresh token. An access token sent along must be genuine (its expiry does
    /// not matter) and belong to the same user and session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        access_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<IssuedTokens, Error> {
        let now = self.ctx.now();
        let claims = self
            .tokens
            .check_refresh(refresh_token, Expiry::Enforce, now)?;
        if let Some(at) = access_token {
            let at = self.tokens.check_access(at, Expiry::Ignore, now)?;
            if at.sub != claims.sub || at.sid != claims.sid {
                return Err(Error::InvalidToken(
                    "access token does not belong to this refresh token",
                ));
            }
        }
        // With a user service, the user's current roles and status come from it; a user it
        // no longer knows, or has disabled, ends here (a report may have been missed).
        let remote_user = match self.ctx.users.remote() {
            Some(remote) => match remote.find(&claims.sub).await? {
                Some(user) if !user.disabled => Some(user),
                _ => {
                    self.end_sessions_of_gone_user(claims.sub, &client).await?;
                    return Err(Error::SessionRevoked);
                }
            },
            None => None,
        };
        let request = RotationRequest {
            jti: claims.jti,
            sid: claims.sid,
            user_id: claims.sub,
            now,
            refresh_ttl: self.ctx.lifetimes.refresh_ttl,
            reuse_grace: self.ctx.lifetimes.reuse_grace,
            read_user: remote_user.is_none(),
        };
        let outbox = self.ctx.outbox;
        let rotation = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let rotation = refresh_tokens::rotate(conn, &request)?;
                    let (kind, detail) = match &rotation {
                        Rotation::Rotated { .. } => {
                            (AuditKind::TokenRefreshed, serde_json::json!({}))
                        }
                        Rotation::Replayed { .. } => (
                            AuditKind::TokenRefreshed,
                            serde_json::json!({"replayed_within_grace": true}),
                        ),
                        Rotation::Reused { .. } => (
                            AuditKind::RefreshTokenReused,
                            serde_json::json!({"revoked_session": request.sid, "jti": request.jti}),
                        ),
                        Rotation::Unknown | Rotation::SessionRevoked | Rotation::Expired => {
                            return Ok(rotation);
                        }
                    };
                    AuditEvent::new(kind, &client)
                        .user(request.user_id)
                        .session(request.sid)
                        .detail(detail)
                        .record(conn, now, outbox)?;
                    Ok::<_, Error>(rotation)
                })
            })
            .await?;
        let outcome = match &rotation {
            Rotation::Rotated { .. } => "rotated",
            Rotation::Replayed { .. } => "replayed",
            Rotation::Reused { .. } => "reused",
            Rotation::SessionRevoked | Rotation::Expired | Rotation::Unknown => "refused",
        };
        Metrics::count(&self.ctx.metrics.refreshes, outcome);
        match rotation {
            Rotation::Rotated { child, user } => {
                log::info!(
                    "refresh: user_id={} sid={} jti={}",
                    claims.sub,
                    claims.sid,
                    child.jti
                );
                self.issue_to(user, remote_user, &child, now)
            }
            Rotation::Replayed { child, user } => {
                log::info!(
                    "refresh replayed within grace: user_id={} sid={} jti={}",
                    claims.sub,
                    claims.sid,
                    child.jti
                );
                self.issue_to(user, remote_user, &child, now)
            }
            Rotation::Reused { revoked_at } => {
                self.ctx.record_revocations([&claims.sid], revoked_at);
                log::warn!(
                    "refresh token reuse detected, session revoked: user_id={} sid={} jti={}",
                    claims.sub,
                    claims.sid,
                    claims.jti
                );
                Err(Error::TokenReused)
            }
            Rotation::SessionRevoked => {
                // Make sure this instance's index knows, whoever revoked it.
                self.ctx.record_revocations([&claims.sid], now);
                Err(Error::SessionRevoked)
            }
            Rotation::Expired => Err(Error::TokenExpired),
            Rotation::Unknown => Err(Error::InvalidToken("refresh token is unknown")),
        }
    }

    /// Ends the session a refresh token belongs to. Idempotent; an expired but genuine
    /// refresh token still logs out.
    pub async fn logout(&self, refresh_token: &str, client: ClientInfo) -> Result<(), Error> {
        let now = self.ctx.now();
        let claims = self
            .tokens
            .check_refresh(refresh_token, Expiry::Ignore, now)?;
        let (sid, sub) = (claims.sid, claims.sub);
        let outbox = self.ctx.outbox;
        let revoked_at = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let live = session_table::find(conn, &sid)?
                        .is_some_and(|s| s.revoked_at.is_none() && s.user_id == sub);
                    let at = session_table::revoke(conn, &sid, RevokeReason::Logout, now)?;
                    if live {
                        AuditEvent::new(AuditKind::LoggedOut, &client)
                            .user(sub)
                            .session(sid)
                            .record(conn, now, outbox)?;
                    }
                    Ok::<_, Error>(at)
                })
            })
            .await?;
        if let Some(at) = revoked_at {
            self.ctx.record_revocations([&sid], at);
            log::info!("logout: user_id={sub} sid={sid}");
        }
        Ok(())
    }

    /// Makes `set` the access-token keys (a rotation, re-read from `keys.dir`). When that
    /// changes anything, no token is answered from what was checked before, and the new
    /// signing `kid` and accepted `kid`s are returned.
    pub fn replace_access_keys(
        &self,
        set: crate::security::keys::KeySet,
    ) -> Option<(String, Vec<String>)> {
        if !self.tokens.replace_access_keys(set) {
            return None;
        }
        self.verified.invalidate();
        Some(self.tokens.access_kids())
    }

    /// Checks an access token without touching the database: from the cache of verified
    /// tokens when it was checked before (and has not expired), else in full; then the
    /// revocation index, on every call.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, Error> {
        let result = self.check_access(token);
        let m = &self.ctx.metrics.hot;
        match &result {
            Ok(_) => m.verify_active.inc(),
            Err(Error::TokenExpired) => m.verify_expired.inc(),
            Err(Error::TokenRevoked) => m.verify_revoked.inc(),
            Err(_) => m.verify_invalid.inc(),
        }
        result
    }

    fn check_access(&self, token: &str) -> Result<Arc<Verified>, Error> {
        let now = self.ctx.now();
        let key = verify_cache::key(token);
        // Read before the check: a key change meanwhile makes the insert a no-op.
        let generation = self.verified.generation();
        let cached = self.verified.get(&key, now);
        let m = &self.ctx.metrics.hot;
        if cached.is_some() {
            m.cache_hit.inc()
        } else {
            m.cache_miss.inc()
        }
        let claims = match cached {
            Some(claims) => claims,
            None => match self.tokens.check_access(token, Expiry::Enforce, now) {
                Ok(claims) => {
                    let verified = Verified::new(claims);
                    self.verified.insert(key, verified.clone(), generation);
                    verified
                }
                // Expired *and* revoked says "revoked": "expired" would send the client to
                // /refresh, which can only fail. Only the expired path pays the second decode.
                Err(TokenError::Expired) => {
                    let claims = self.tokens.check_access(token, Expiry::Ignore, now)?;
                    return Err(if self.ctx.revoked.is_revoked(&claims.sid) {
                        Error::TokenRevoked
                    } else {
                        Error::TokenExpired
                    });
                }
                Err(e) => return Err(e.into()),
            },
        };
        if self.ctx.revoked.is_revoked(&claims.claims.sid) {
            return Err(Error::TokenRevoked);
        }
        Ok(claims)
    }

    /// Whether `token` is active (RFC 7662). An access token is answered from memory, as
    /// `/verify` answers; a refresh token also needs its row (unused) and session (live).
    pub async fn introspect(
        &self,
        token: &str,
        hint: Option<&str>,
    ) -> Result<Introspection, Error> {
        let now = self.ctx.now();
        let as_refresh = |s: &Self| s.tokens.check_refresh(token, Expiry::Enforce, now).ok();
        let refresh = if hint == Some("refresh_token") {
            as_refresh(self)
        } else {
            None
        };
        let refresh = match refresh {
            Some(r) => Some(r),
            None => match self.verify(token) {
                Ok(verified) => return Ok(Introspection::Access(verified)),
                Err(Error::Unavailable(e)) => return Err(Error::Unavailable(e)),
                Err(_) => as_refresh(self),
            },
        };
        let Some(claims) = refresh else {
            return Ok(Introspection::Inactive);
        };
        if self.ctx.revoked.is_revoked(&claims.sid) {
            return Ok(Introspection::Inactive);
        }
        let (jti, sid, sub) = (claims.jti, claims.sid, claims.sub);
        let live = self
            .ctx
            .db
            .run(move |conn| refresh_tokens::is_live(conn, &jti, &sid, &sub, now))
            .await?;
        Ok(if live {
            Introspection::Refresh(claims)
        } else {
            Introspection::Inactive
        })
    }

    /// Ends the session of a refresh or access token (RFC 7009). Anything else, an unknown
    /// or forged token included, is no error: the answer is the same.
    pub async fn revoke_token(&self, token: &str, client: ClientInfo) -> Result<(), Error> {
        let now = self.ctx.now();
        if self
            .tokens
            .check_refresh(token, Expiry::Ignore, now)
            .is_ok()
        {
            return self.logout(token, client).await;
        }
        let Ok(claims) = self.tokens.check_access(token, Expiry::Ignore, now) else {
            return Ok(());
        };
        let (sid, sub) = (claims.sid, claims.sub);
        let outbox = self.ctx.outbox;
        let revoked_at = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let live = session_table::find(conn, &sid)?
                        .is_some_and(|s| s.revoked_at.is_none() && s.user_id == sub);
                    if !live {
                        return Ok::<_, Error>(None);
                    }
                    let at = session_table::revoke(conn, &sid, RevokeReason::Logout, now)?;
                    AuditEvent::new(AuditKind::LoggedOut, &client)
                        .user(sub)
                        .session(sid)
                        .detail(serde_json::json!({"via": "revocation endpoint"}))
                        .record(conn, now, outbox)?;
                    Ok(at)
                })
            })
            .await?;
        if let Some(at) = revoked_at {
            self.ctx.record_revocations([&sid], at);
            log::info!("session revoked by its access token: user_id={sub} sid={sid}");
        }
        Ok(())
    }

    /// The public keys that verify access tokens, for `/.well-known/jwks.json`.
    pub fn published_keys(&self) -> crate::security::keys::JwkSet {
        self.tokens.jwks()
    }

    /// Tokens in the cache of verified tokens.
    pub fn verified_cached(&self) -> usize {
        self.verified.len()
    }
}

/// Stores a new session of `user_id` and its first refresh token (inside the caller's
/// transaction); returns that token's record.
fn insert_session(
    conn: &mut DbConn,
    user_id: UserId,
    now: i64,
    lifetimes: Lifetimes,
    client: &ClientInfo,
) -> Result<RefreshTokenRecord, Error> {
    let session = NewSession {
        id: SessionId::random(),
        user_id,
        now,
        expires_at: lifetimes.session_ttl.map(|t| now.saturating_add(t)),
        client,
    };
    let mut first_exp = now.saturating_add(lifetimes.refresh_ttl);
    if let Some(cap) = session.expires_at {
        first_exp = first_exp.min(cap);
    }
    let first = RefreshTokenRecord {
        jti: TokenId::random(),
        session_id: session.id,
        parent_jti: None,
        issued_at: now,
        expires_at: first_exp,
        used_at: None,
    };
    session_table::insert(conn, &session)?;
    refresh_tokens::insert(conn, &first)?;
    Ok(first)
}

/// What opening a session for a user of the user service came to.
enum Opening {
    Opened(RefreshTokenRecord),
    /// A disable or a role removal was reported since the credentials were checked.
    ReadAgain,
    /// A password change was reported since: the password checked may be the old one.
    PasswordChanged,
}
