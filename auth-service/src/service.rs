//! The token service's operations: register, log in, refresh, log out, verify.
//! HTTP handlers call exactly one of these; everything here is transport-agnostic.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::{self, AuditEvent, AuditKind};
use crate::db::Database;
use crate::error::Error;
use crate::keys::Keys;
use crate::password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Passwords};
use crate::revocation::RevokedSessions;
use crate::settings::Settings;
use crate::store::{
    self, PruneRequest, Pruned, RefreshTokenRow, RevokeReason, Rotation, RotationRequest,
    SessionRow, UserRow,
};
use crate::throttle::LoginThrottle;
use crate::tokens::{AccessClaims, Expiry, Tokens};

pub const DEFAULT_ROLE: &str = "user";
const MAX_USER_AGENT_CHARS: usize = 512;
const MAX_EMAIL_CHARS: usize = 254;

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub fn rfc3339(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Where a request came from, recorded on the session it opens.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub struct NewUser {
    pub username: String,
    pub password: SecretString,
    pub email: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub created_at: String,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            roles: u.role_list(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
}

pub struct AuthService {
    pub db: Database,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub revoked: Arc<RevokedSessions>,
    pub throttle: LoginThrottle,
    /// Registrations per address; `None` when `register.max_per_ip` is 0.
    register_throttle: Option<LoginThrottle>,
    refresh_ttl: i64,
    session_ttl: Option<i64>,
    reuse_grace: i64,
    settings: Settings,
}

/// How long after a revocation an access token of that session may still be presented.
fn revocation_horizon(settings: &Settings) -> i64 {
    secs(settings.tokens.access_ttl) + secs(settings.tokens.leeway) + 1
}

/// The limits of one pruning pass under `settings`, at time `now`.
pub fn prune_request(settings: &Settings, now: i64) -> PruneRequest {
    PruneRequest {
        now,
        audit_before: now - secs(settings.retention.audit_max_age),
        revoked_keep: revocation_horizon(settings),
        refresh_ttl: secs(settings.tokens.refresh_ttl),
        batch_size: i64::from(settings.retention.batch_size),
    }
}

pub fn validate_username(username: &str) -> Result<(), Error> {
    let ok_len = (3..=64).contains(&username.len());
    let ok_chars = username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(Error::Validation(
            "username: 3 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
        ))
    }
}

pub fn validate_password(password: &SecretString) -> Result<(), Error> {
    let chars = password.expose_secret().chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )))
    }
}

/// A deliberately loose check: one `@` with something on both sides, no spaces or controls.
pub fn normalize_email(email: &str) -> Result<String, Error> {
    let email = email.trim();
    let bad = || Error::Validation("email: not a valid address".into());
    if email.is_empty() || email.chars().count() > MAX_EMAIL_CHARS {
        return Err(bad());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email.to_lowercase())
        }
        _ => Err(bad()),
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl AuthService {
    pub fn new(settings: &Settings, db: Database) -> Result<AuthService, Error> {
        let keys = Keys::load(settings).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(AuthService {
            db,
            passwords: Passwords::new(&settings.password)?,
            tokens: Tokens::new(keys, &settings.tokens),
            revoked: Arc::new(RevokedSessions::new()),
            throttle: LoginThrottle::new(
                secs(settings.login.failure_window),
                settings.login.max_failures,
                settings.login.max_failures_per_ip,
            ),
            register_throttle: (settings.register.max_per_ip > 0).then(|| {
                LoginThrottle::new(
                    secs(settings.register.window),
                    u32::MAX,
                    settings.register.max_per_ip,
                )
            }),
            refresh_ttl: secs(settings.tokens.refresh_ttl),
            session_ttl: settings.tokens.session_ttl.map(secs),
            reuse_grace: secs(settings.tokens.reuse_grace),
            settings: settings.clone(),
        })
    }

    fn revocation_horizon(&self) -> i64 {
        revocation_horizon(&self.settings)
    }

    pub fn refresh_ttl(&self) -> i64 {
        self.refresh_ttl
    }

    /// Deletes old audit rows, expired refresh tokens and dead sessions (see [`store::prune`]).
    pub async fn prune(&self) -> Result<Pruned, Error> {
        let request = prune_request(&self.settings, now());
        self.db.run(move |conn| store::prune(conn, &request)).await
    }

    pub(crate) fn remember_revocation(&self, sid: &str, revoked_at: i64) {
        self.revoked
            .revoke(sid, revoked_at + self.revocation_horizon());
    }

    /// Brings the revocation index up to date with the database: at start-up, and
    /// periodically to pick up revocations made by other instances or the command line.
    pub async fn sync_revocations(&self) -> Result<usize, Error> {
        let since = now() - self.revocation_horizon();
        let rows = self
            .db
            .run(move |conn| store::revoked_since(conn, since))
            .await?;
        for (sid, at) in &rows {
            self.remember_revocation(sid, *at);
        }
        Ok(rows.len())
    }

    /// Forgets revocations and login failures that no longer matter.
    pub fn prune_memory(&self) -> usize {
        let ts = now();
        self.throttle.prune(ts);
        if let Some(t) = &self.register_throttle {
            t.prune(ts);
        }
        self.revoked.prune(ts)
    }

    pub async fn register(&self, input: NewUser, client: ClientInfo) -> Result<UserView, Error> {
        validate_username(&input.username)?;
        validate_password(&input.password)?;
        let email = match input.email.as_deref() {
            Some(e) => Some(normalize_email(e)?),
            None => None,
        };
        // Every registration costs a password hash: bound them per address. Counted as it
        // starts and whatever its outcome (a taken name is a probe; a request abandoned
        // mid-way may still have created the user).
        if let Some(throttle) = &self.register_throttle {
            let ip = client.ip.clone().unwrap_or_default();
            throttle
                .begin(&ip, "", now())
                .map_err(Error::TooManyAttempts)?
                .keep();
        }
        let hash = self.passwords.hash(input.password).await?;
        let ts = now();
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            username_key: input.username.to_lowercase(),
            username: input.username,
            email,
            password_hash: hash,
            roles: DEFAULT_ROLE.to_string(),
            disabled: false,
            created_at: ts,
            updated_at: ts,
        };
        let user = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    store::insert_user(conn, &user)?;
                    let event = AuditEvent::new(AuditKind::Registered, &client).user(&user.id);
                    audit::record(conn, &event, ts)?;
                    Ok(user)
                })
            })
            .await?;
        log::info!("user registered: user_id={}", user.id);
        Ok(UserView::from(&user))
    }

    /// Checks credentials and opens a session. Every failure is the same
    /// `invalid_credentials`, reached through the same amount of hashing.
    pub async fn login(
        &self,
        login: String,
        password: SecretString,
        client: ClientInfo,
    ) -> Result<TokenPair, Error> {
        if login.is_empty()
            || login.chars().count() > MAX_EMAIL_CHARS
            || password.expose_secret().chars().count() > MAX_PASSWORD_CHARS
        {
            return Err(Error::InvalidCredentials);
        }
        let ip = client.ip.clone().unwrap_or_default();
        let attempt = self
            .throttle
            .begin(&ip, &login, now())
            .map_err(Error::TooManyAttempts)?;
        // No username or email holds a control character, and PostgreSQL refuses NUL in
        // text: such a login matches nobody, but still goes through the dummy hash.
        let matchable = !login.chars().any(char::is_control);
        let tried: String = login
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect();
        let user = if matchable {
            self.db
                .run(move |conn| store::find_user_for_login(conn, &login))
                .await?
        } else {
            None
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.passwords.verify(password.clone(), stored).await?;
        let user = match user {
            Some(u) if verified.matches && !u.disabled => u,
            other => {
                attempt.failed();
                let user_id = other.map(|u| u.id);
                log::info!(
                    "login failed: user_id={}",
                    user_id.as_deref().unwrap_or("<unknown>")
                );
                let mut event = AuditEvent::new(AuditKind::LoginFailed, &client)
                    .detail(serde_json::json!({"username": tried}));
                event.user_id = user_id;
                self.db
                    .run(move |conn| audit::record(conn, &event, now()))
                    .await?;
                return Err(Error::InvalidCredentials);
            }
        };
        attempt.succeeded();
        if verified.needs_rehash {
            self.upgrade_hash(&user.id, password).await;
        }

        let ts = now();
        let session = SessionRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            created_at: ts,
            last_used_at: ts,
            expires_at: self.session_ttl.map(|t| ts.saturating_add(t)),
            revoked_at: None,
            revoked_reason: None,
            user_agent: client
                .user_agent
                .as_deref()
                .map(|ua| truncate_chars(ua, MAX_USER_AGENT_CHARS)),
            ip: client.ip.clone(),
        };
        let mut first_exp = ts.saturating_add(self.refresh_ttl);
        if let Some(cap) = session.expires_at {
            first_exp = first_exp.min(cap);
        }
        let first = RefreshTokenRow {
            jti: uuid::Uuid::new_v4().to_string(),
            session_id: session.id.clone(),
            parent_jti: None,
            issued_at: ts,
            expires_at: first_exp,
            used_at: None,
        };
        let event = AuditEvent::new(AuditKind::LoginSucceeded, &client)
            .user(&user.id)
            .session(&session.id);
        let (session, first) = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    store::create_session(conn, &session, &first)?;
                    audit::record(conn, &event, ts)?;
                    Ok((session, first))
                })
            })
            .await?;
        log::info!("login: user_id={} sid={}", user.id, session.id);
        self.token_pair(&user, &first, ts)
    }

    /// Re-hashes a password whose stored hash uses old parameters. Failure only costs the
    /// upgrade, never the login.
    async fn upgrade_hash(&self, user_id: &str, password: SecretString) {
        let user_id = user_id.to_string();
        let result = async {
            let hash = self.passwords.hash(password).await?;
            let id = user_id.clone();
            self.db
                .run(move |conn| store::update_password_hash(conn, &id, &hash, now()))
                .await
        }
        .await;
        match result {
            Ok(()) => log::info!("password hash upgraded: user_id={user_id}"),
            Err(e) => log::warn!("password hash upgrade failed: user_id={user_id}: {e}"),
        }
    }

    fn token_pair(
        &self,
        user: &UserRow,
        rt: &RefreshTokenRow,
        ts: i64,
    ) -> Result<TokenPair, Error> {
        let access = self.tokens.issue_access(
            &user.id,
            &user.username,
            user.role_list(),
            &rt.session_id,
            ts,
        )?;
        let refresh_token = self.tokens.sign_refresh(
            &rt.jti,
            &rt.session_id,
            &user.id,
            rt.issued_at,
            rt.expires_at,
        )?;
        Ok(TokenPair {
            access_token: access.token,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.tokens.access_ttl(),
            refresh_expires_in: (rt.expires_at - ts).max(0),
        })
    }

    /// Rotates a refresh token. An access token sent along must be genuine (its expiry does
    /// not matter) and belong to the same user and session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        access_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<TokenPair, Error> {
        let claims = self.tokens.check_refresh(refresh_token, Expiry::Enforce)?;
        if let Some(at) = access_token {
            let at = self.tokens.check_access(at, Expiry::Ignore)?;
            if at.sub != claims.sub || at.sid != claims.sid {
                return Err(Error::InvalidToken(
                    "access token does not belong to this refresh token",
                ));
            }
        }
        let ts = now();
        let (refresh_ttl, reuse_grace) = (self.refresh_ttl, self.reuse_grace);
        let (jti, sid, sub) = (claims.jti.clone(), claims.sid.clone(), claims.sub.clone());
        let outcome = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    let rotation = store::rotate_refresh_token(
                        conn,
                        &RotationRequest {
                            jti: &jti,
                            sid: &sid,
                            user_id: &sub,
                            now: ts,
                            refresh_ttl,
                            reuse_grace,
                        },
                    )?;
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
                            serde_json::json!({"revoked_session": sid, "jti": jti}),
                        ),
                    };
                    let event = AuditEvent::new(kind, &client)
                        .user(&sub)
                        .session(&sid)
                        .detail(detail);
                    audit::record(conn, &event, ts)?;
                    Ok(rotation)
                })
            })
            .await;
        match outcome {
            Ok(Rotation::Rotated { child, user }) => {
                log::info!(
                    "refresh: user_id={} sid={} jti={}",
                    user.id,
                    claims.sid,
                    child.jti
                );
                self.token_pair(&user, &child, ts)
            }
            Ok(Rotation::Replayed { child, user }) => {
                log::info!(
                    "refresh replayed within grace: user_id={} sid={} jti={}",
                    user.id,
                    claims.sid,
                    child.jti
                );
                self.token_pair(&user, &child, ts)
            }
            Ok(Rotation::Reused { revoked_at }) => {
                self.remember_revocation(&claims.sid, revoked_at);
                log::warn!(
                    "refresh token reuse detected, session revoked: user_id={} sid={} jti={}",
                    claims.sub,
                    claims.sid,
                    claims.jti
                );
                Err(Error::TokenReused)
            }
            Err(Error::SessionRevoked) => {
                // Make sure this instance's index knows, whoever revoked it.
                self.remember_revocation(&claims.sid, ts);
                Err(Error::SessionRevoked)
            }
            Err(e) => Err(e),
        }
    }

    /// Ends the session a refresh token belongs to. Idempotent; an expired but genuine
    /// refresh token still logs out.
    pub async fn logout(&self, refresh_token: &str, client: ClientInfo) -> Result<(), Error> {
        let claims = self.tokens.check_refresh(refresh_token, Expiry::Ignore)?;
        let (sid, sub) = (claims.sid.clone(), claims.sub.clone());
        let revoked_at = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    let ts = now();
                    let live = store::find_session(conn, &sid)?
                        .is_some_and(|s| s.revoked_at.is_none() && s.user_id == sub);
                    let at = store::revoke_session(conn, &sid, RevokeReason::Logout, ts)?;
                    if live {
                        let event = AuditEvent::new(AuditKind::LoggedOut, &client)
                            .user(&sub)
                            .session(&sid);
                        audit::record(conn, &event, ts)?;
                    }
                    Ok(at)
                })
            })
            .await?;
        if let Some(at) = revoked_at {
            self.remember_revocation(&claims.sid, at);
            log::info!("logout: user_id={} sid={}", claims.sub, claims.sid);
        }
        Ok(())
    }

    /// Checks an access token without touching the database.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, Error> {
        let claims = match self.tokens.check_access(token, Expiry::Enforce) {
            Ok(claims) => claims,
            // Expired *and* revoked says "revoked": "expired" would send the client to
            // /refresh, which can only fail. Only the expired path pays the second decode.
            Err(Error::TokenExpired) => {
                let claims = self.tokens.check_access(token, Expiry::Ignore)?;
                return Err(if self.revoked.is_revoked(&claims.sid) {
                    Error::TokenRevoked
                } else {
                    Error::TokenExpired
                });
            }
            Err(e) => return Err(e),
        };
        if self.revoked.is_revoked(&claims.sid) {
            return Err(Error::TokenRevoked);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "Alice.B_c-9", &"a".repeat(64)] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(65),
            "al ice",
            "al@ice",
            "ålice",
            "",
            "a/b",
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        let s = |x: &str| SecretString::from(x.to_string());
        assert!(validate_password(&s("1234567")).is_err());
        assert!(validate_password(&s("12345678")).is_ok());
        assert!(validate_password(&s(&"é".repeat(256))).is_ok());
        assert!(validate_password(&s(&"é".repeat(257))).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
