//! The caller's own account: profile, password, sessions. The user is always the one named
//! by the verified access token, never by anything in the request.

use secrecy::SecretString;
use serde::Serialize;

use crate::audit::{self, AuditEvent, AuditKind};
use crate::error::Error;
use crate::service::{AuthService, ClientInfo, UserView, now, rfc3339, validate_password};
use crate::store::{self, RevokeReason, SessionRow};
use crate::tokens::AccessClaims;

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub current: bool,
}

impl SessionView {
    fn new(s: SessionRow, current_sid: &str) -> SessionView {
        SessionView {
            current: s.id == current_sid,
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: s.expires_at.map(rfc3339),
            user_agent: s.user_agent,
            ip: s.ip,
        }
    }
}

pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

impl AuthService {
    pub async fn me(&self, caller: &AccessClaims) -> Result<UserView, Error> {
        let id = caller.sub.clone();
        let user = self
            .db
            .run(move |conn| store::find_user(conn, &id))
            .await?
            .ok_or(Error::TokenRevoked)?;
        Ok(UserView::from(&user))
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
        let ip = client.ip.clone().unwrap_or_default();
        let throttle_key = format!("#{}", caller.sub);
        let attempt = self
            .throttle
            .begin(&ip, &throttle_key, now())
            .map_err(Error::TooManyAttempts)?;
        let id = caller.sub.clone();
        let user = self.db.run(move |conn| store::find_user(conn, &id)).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.passwords.verify(current, stored).await?;
        let user = match user {
            Some(u) if verified.matches && !u.disabled => u,
            _ => {
                attempt.failed();
                return Err(Error::InvalidCredentials);
            }
        };
        attempt.succeeded();
        validate_password(&new)?;
        let hash = self.passwords.hash(new).await?;
        let keep = caller.sid.clone();
        let ts = now();
        let user_id = user.id.clone();
        let ended = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    store::update_password_hash(conn, &user_id, &hash, ts)?;
                    let ended = store::revoke_user_sessions(
                        conn,
                        &user_id,
                        RevokeReason::PasswordChanged,
                        Some(&keep),
                        ts,
                    )?;
                    let event = AuditEvent::new(AuditKind::PasswordChanged, &client)
                        .user(&user_id)
                        .session(&keep)
                        .detail(serde_json::json!({"sessions_ended": ended.len()}));
                    audit::record(conn, &event, ts)?;
                    Ok(ended)
                })
            })
            .await?;
        for sid in &ended {
            self.remember_revocation(sid, ts);
        }
        log::info!(
            "password changed: user_id={} other sessions ended={}",
            user.id,
            ended.len()
        );
        Ok(())
    }

    pub async fn my_sessions(&self, caller: &AccessClaims) -> Result<Vec<SessionView>, Error> {
        let id = caller.sub.clone();
        let refresh_ttl = self.refresh_ttl();
        let rows = self
            .db
            .run(move |conn| store::live_sessions(conn, &id, now(), refresh_ttl))
            .await?;
        Ok(rows
            .into_iter()
            .map(|s| SessionView::new(s, &caller.sid))
            .collect())
    }

    /// Ends one of the caller's sessions. Anyone else's session id is answered 404 and
    /// left alone.
    pub async fn end_my_session(
        &self,
        caller: &AccessClaims,
        sid: &str,
        client: ClientInfo,
    ) -> Result<(), Error> {
        if !is_uuid(sid) {
            return Err(Error::NotFound);
        }
        let (user_id, target) = (caller.sub.clone(), sid.to_string());
        let ts = now();
        let ended = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    let ended = store::revoke_own_session(
                        conn,
                        &user_id,
                        &target,
                        RevokeReason::EndedByUser,
                        ts,
                    )?;
                    if ended {
                        let event = AuditEvent::new(AuditKind::SessionRevoked, &client)
                            .user(&user_id)
                            .session(&target)
                            .detail(serde_json::json!({"by": user_id}));
                        audit::record(conn, &event, ts)?;
                    }
                    Ok(ended)
                })
            })
            .await?;
        if !ended {
            return Err(Error::NotFound);
        }
        self.remember_revocation(sid, ts);
        log::info!(
            "session ended by its user: user_id={} sid={sid}",
            caller.sub
        );
        Ok(())
    }

    /// Ends every session of the caller, the current one included.
    pub async fn logout_all(&self, caller: &AccessClaims, client: ClientInfo) -> Result<(), Error> {
        let user_id = caller.sub.clone();
        let current = caller.sid.clone();
        let ts = now();
        let ended = self
            .db
            .run(move |conn| {
                conn.write_transaction(|conn| {
                    let ended = store::revoke_user_sessions(
                        conn,
                        &user_id,
                        RevokeReason::LogoutAll,
                        None,
                        ts,
                    )?;
                    let event = AuditEvent::new(AuditKind::LoggedOutAll, &client)
                        .user(&user_id)
                        .session(&current)
                        .detail(serde_json::json!({"sessions_ended": ended.len()}));
                    audit::record(conn, &event, ts)?;
                    Ok(ended)
                })
            })
            .await?;
        for sid in &ended {
            self.remember_revocation(sid, ts);
        }
        // The caller's own session may have been revoked already; its tokens die either way.
        self.remember_revocation(&caller.sid, ts);
        log::info!(
            "logout all: user_id={} sessions ended={}",
            caller.sub,
            ended.len()
        );
        Ok(())
    }
}
