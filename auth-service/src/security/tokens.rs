//! Access and refresh tokens: their claims, how they are signed, and how they are checked.
//!
//! The two kinds differ in header `typ`, in key (refresh tokens use a local HMAC key), and in
//! audience, so one can never pass for the other. The time is always passed in (`now`, Unix
//! seconds): `exp` and `nbf` are checked here against it, never against the system clock, so
//! a test clock moves token expiry too.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TokenSettings;
use crate::model::{SessionId, TokenId, UserId};
use crate::security::keys::{KeySet, Keys, VerifyingKey};

pub const ACCESS_TYP: &str = "at+jwt";
pub const REFRESH_TYP: &str = "rt+jwt";
/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, forged, of the wrong kind, for someone else, or not valid yet.
    #[error("{0}")]
    Invalid(&'static str),
    /// Genuine, but past its `exp` (plus the leeway).
    #[error("token has expired")]
    Expired,
}

/// Signing failed: only possible with a broken key.
#[derive(Debug, thiserror::Error)]
#[error("token signing failed")]
pub struct SigningError(#[source] jsonwebtoken::errors::Error);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: TokenId,
    pub sid: SessionId,
    pub roles: Vec<String>,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: TokenId,
    pub sid: SessionId,
}

/// An access token of a machine client (the client-credentials grant, RFC 9068): the
/// client is the subject, and what it may do is its `scope`. It has no session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientClaims {
    pub iss: String,
    pub aud: String,
    /// The client id.
    pub sub: String,
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: TokenId,
}

/// Claims every token kind has, for the time checks.
trait TimeClaims {
    fn exp(&self) -> i64;
    fn nbf(&self) -> i64;
}

impl TimeClaims for AccessClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
    fn nbf(&self) -> i64 {
        self.nbf
    }
}

impl TimeClaims for ClientClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
    fn nbf(&self) -> i64 {
        self.nbf
    }
}

impl TimeClaims for RefreshClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
    fn nbf(&self) -> i64 {
        self.nbf
    }
}

/// Whether `exp` is enforced. Only the expired access token sent along with a refresh, and
/// a logout, skip it; the signature and every other claim are still checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Enforce,
    Ignore,
}

struct Checker {
    key: VerifyingKey,
    validation: Validation,
}

struct Family {
    set: KeySet,
    typ: &'static str,
    issuer: String,
    audience: String,
    leeway: i64,
    checkers: HashMap<String, Checker>,
}

impl Family {
    fn new(set: KeySet, typ: &'static str, issuer: &str, audience: &str, leeway: i64) -> Family {
        let checkers = set
            .verifying
            .iter()
            .map(|(kid, key)| {
                let mut v = Validation::new(key.algorithm);
                v.set_issuer(&[issuer]);
                v.set_audience(&[audience]);
                v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
                // Time is checked by `check` against the injected clock.
                v.validate_exp = false;
                v.validate_nbf = false;
                (
                    kid.clone(),
                    Checker {
                        key: key.clone(),
                        validation: v,
                    },
                )
            })
            .collect();
        Family {
            set,
            typ,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway,
            checkers,
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SigningError> {
        let mut header = Header::new(self.set.signing.algorithm);
        header.typ = Some(self.typ.to_string());
        header.kid = Some(self.set.signing.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.set.signing.key).map_err(SigningError)
    }

    fn check<T: serde::de::DeserializeOwned + TimeClaims>(
        &self,
        token: &str,
        expiry: Expiry,
        now: i64,
    ) -> Result<T, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid("token is too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("token is malformed"))?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == self.typ || t.strip_prefix("application/") == Some(self.typ)
        });
        if !typ_ok {
            return Err(TokenError::Invalid("token is of the wrong type"));
        }
        let checker = header
            .kid
            .as_deref()
            .and_then(|kid| self.checkers.get(kid))
            .ok_or(TokenError::Invalid("token is signed with an unknown key"))?;
        // The key decides the algorithm; the header may only agree with it.
        if header.alg != checker.key.algorithm {
            return Err(TokenError::Invalid(
                "token algorithm does not match its key",
            ));
        }
        let claims: T = jsonwebtoken::decode::<T>(token, &checker.key.key, &checker.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Invalid("token signature is invalid"),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::Invalid("token is not meant for this service")
                }
                _ => TokenError::Invalid("token is invalid"),
            })?;
        // The same rules as jsonwebtoken's own, against the time we were given.
        if expiry == Expiry::Enforce && claims.exp() < now - self.leeway {
            return Err(TokenError::Expired);
        }
        if claims.nbf() > now + self.leeway {
            return Err(TokenError::Invalid("token is not valid yet"));
        }
        Ok(claims)
    }
}

/// What makes two key sets the same: the signing `kid` and every verifying key by `kid`
/// and material (a file replaced in place under a fixed `keys.kid` is a change).
fn identity_of(set: &KeySet) -> (String, Vec<(String, [u8; 32])>) {
    let mut keys: Vec<(String, [u8; 32])> = set
        .verifying
        .iter()
        .map(|(kid, key)| (kid.clone(), key.fingerprint))
        .collect();
    keys.sort();
    (set.signing.kid.clone(), keys)
}

/// Issues and checks tokens with the configured keys and lifetimes.
pub struct Tokens {
    access: Arc<RwLock<Arc<Family>>>,
    refresh: Family,
    issuer: String,
    access_ttl: i64,
}

/// What an access token says about its holder.
pub struct AccessGrant<'a> {
    pub user_id: UserId,
    pub username: &'a str,
    pub roles: Vec<String>,
    pub session_id: SessionId,
}

/// What a refresh token is signed from: its stored row.
pub struct RefreshGrant {
    pub jti: TokenId,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl Tokens {
    pub fn new(keys: Keys, settings: &TokenSettings) -> Tokens {
        let leeway = settings.leeway.as_secs_i64();
        // A refresh token is addressed to this service itself, never to resource servers.
        let refresh_audience = format!("{}#refresh", settings.issuer);
        let access = Arc::new(RwLock::new(Arc::new(Family::new(
            keys.access,
            ACCESS_TYP,
            &settings.issuer,
            &settings.audience,
            leeway,
        ))));
        Tokens {
            access,
            refresh: Family::new(
                keys.refresh,
                REFRESH_TYP,
                &settings.issuer,
                &refresh_audience,
                leeway,
            ),
            issuer: settings.issuer.clone(),
            access_ttl: settings.access_ttl.as_secs_i64(),
        }
    }

    pub fn access_ttl(&self) -> i64 {
        self.access_ttl
    }

    /// The signing `kid` and every accepted `kid` (sorted) in use now.
    pub fn access_kids(&self) -> (String, Vec<String>) {
        let (signing, keys) = identity_of(&self.access().set);
        (signing, keys.into_iter().map(|(kid, _)| kid).collect())
    }

    /// Makes `set` the access keys of this running instance (a rotation, picked up by the
    /// server's key-reload task): new tokens are signed with its signing key, and only its
    /// keys verify. Returns whether anything changed. Readers take a short read lock to
    /// clone an `Arc`; nothing on the verify path touches the file system.
    pub fn replace_access_keys(&self, set: KeySet) -> bool {
        let old = self.access();
        if identity_of(&old.set) == identity_of(&set) {
            return false;
        }
        let family = Family::new(set, old.typ, &old.issuer, &old.audience, old.leeway);
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(family);
        true
    }

    /// The access-token family in use now (a rotation may replace it at any time).
    fn access(&self) -> Arc<Family> {
        self.access
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The public keys that verify access tokens (see [`KeySet::jwks`]).
    pub fn jwks(&self) -> crate::security::keys::JwkSet {
        self.access().set.jwks()
    }

    /// Signs a new access token, valid from `now` for `access_ttl`.
    pub fn issue_access(&self, grant: AccessGrant<'_>, now: i64) -> Result<String, SigningError> {
        let access = self.access();
        access.sign(&AccessClaims {
            iss: self.issuer.clone(),
            aud: access.audience.clone(),
            sub: grant.user_id,
            exp: now.saturating_add(self.access_ttl),
            nbf: now,
            iat: now,
            jti: TokenId::random(),
            sid: grant.session_id,
            roles: grant.roles,
            username: grant.username.to_string(),
        })
    }

    /// Signs an access token for a machine client, valid from `now` for `access_ttl`.
    pub fn issue_client(
        &self,
        client_id: &str,
        scope: &str,
        now: i64,
    ) -> Result<String, SigningError> {
        let access = self.access();
        access.sign(&ClientClaims {
            iss: self.issuer.clone(),
            aud: access.audience.clone(),
            sub: client_id.to_string(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            exp: now.saturating_add(self.access_ttl),
            nbf: now,
            iat: now,
            jti: TokenId::random(),
        })
    }

    /// Checks a machine client's access token (a user's does not pass: it has no
    /// `client_id`; and the reverse: a client's has no `sid`).
    pub fn check_client(&self, token: &str, now: i64) -> Result<ClientClaims, TokenError> {
        self.access().check(token, Expiry::Enforce, now)
    }

    /// Signs a refresh token from its stored row. The same row always yields the same token
    /// (HMAC is deterministic), which is what lets the reuse grace hand out the same child.
    pub fn sign_refresh(&self, grant: &RefreshGrant) -> Result<String, SigningError> {
        self.refresh.sign(&RefreshClaims {
            iss: self.issuer.clone(),
            aud: self.refresh.audience.clone(),
            sub: grant.user_id,
            exp: grant.expires_at,
            nbf: grant.issued_at,
            iat: grant.issued_at,
            jti: grant.jti,
            sid: grant.session_id,
        })
    }

    pub fn check_access(
        &self,
        token: &str,
        expiry: Expiry,
        now: i64,
    ) -> Result<AccessClaims, TokenError> {
        self.access().check(token, expiry, now)
    }

    pub fn check_refresh(
        &self,
        token: &str,
        expiry: Expiry,
        now: i64,
    ) -> Result<RefreshClaims, TokenError> {
        self.refresh.check(token, expiry, now)
    }
}

#[cfg(test)]
mod tests;
