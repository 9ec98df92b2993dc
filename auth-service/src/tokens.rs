//! Access and refresh tokens: their claims, how they are signed, and how they are checked.
//!
//! The two kinds differ in header `typ`, in key (refresh tokens use a local HMAC key), and in
//! audience, so one can never pass for the other.

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::keys::{KeySet, Keys, VerifyingKey};
use crate::settings::TokenSettings;

pub const ACCESS_TYP: &str = "at+jwt";
pub const REFRESH_TYP: &str = "rt+jwt";
/// Tokens longer than this are rejected before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: String,
    pub roles: Vec<String>,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: String,
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
    enforce_exp: Validation,
    ignore_exp: Validation,
}

struct Family {
    set: KeySet,
    typ: &'static str,
    audience: String,
    checkers: HashMap<String, Checker>,
}

impl Family {
    fn new(set: KeySet, typ: &'static str, issuer: &str, audience: &str, leeway: u64) -> Family {
        let checkers = set
            .verifying
            .iter()
            .map(|(kid, key)| {
                let mut v = Validation::new(key.algorithm);
                v.set_issuer(&[issuer]);
                v.set_audience(&[audience]);
                v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
                v.validate_nbf = true;
                v.leeway = leeway;
                let mut ignore = v.clone();
                ignore.validate_exp = false;
                (
                    kid.clone(),
                    Checker {
                        key: key.clone(),
                        enforce_exp: v,
                        ignore_exp: ignore,
                    },
                )
            })
            .collect();
        Family {
            set,
            typ,
            audience: audience.to_string(),
            checkers,
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        let mut header = Header::new(self.set.signing.algorithm);
        header.typ = Some(self.typ.to_string());
        header.kid = Some(self.set.signing.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.set.signing.key)
            .map_err(|e| Error::Internal(format!("token signing failed: {e}")))
    }

    fn check<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        expiry: Expiry,
    ) -> Result<T, Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken("token is too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::InvalidToken("token is malformed"))?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == self.typ || t.strip_prefix("application/") == Some(self.typ)
        });
        if !typ_ok {
            return Err(Error::InvalidToken("token is of the wrong type"));
        }
        let checker = header
            .kid
            .as_deref()
            .and_then(|kid| self.checkers.get(kid))
            .ok_or(Error::InvalidToken("token is signed with an unknown key"))?;
        // The key decides the algorithm; the header may only agree with it.
        if header.alg != checker.key.algorithm {
            return Err(Error::InvalidToken(
                "token algorithm does not match its key",
            ));
        }
        let validation = match expiry {
            Expiry::Enforce => &checker.enforce_exp,
            Expiry::Ignore => &checker.ignore_exp,
        };
        jsonwebtoken::decode::<T>(token, &checker.key.key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Error::TokenExpired,
                ErrorKind::ImmatureSignature => Error::InvalidToken("token is not valid yet"),
                ErrorKind::InvalidSignature => Error::InvalidToken("token signature is invalid"),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    Error::InvalidToken("token is not meant for this service")
                }
                _ => Error::InvalidToken("token is invalid"),
            })
    }
}

/// Issues and checks tokens with the configured keys and lifetimes.
pub struct Tokens {
    access: Family,
    refresh: Family,
    issuer: String,
    access_ttl: i64,
}

/// A freshly issued access token.
pub struct IssuedAccess {
    pub token: String,
    pub claims: AccessClaims,
}

fn is_uuid(s: &str) -> bool {
    Uuid::parse_str(s).is_ok()
}

impl Tokens {
    pub fn new(keys: Keys, settings: &TokenSettings) -> Tokens {
        let leeway = settings.leeway.as_secs();
        // A refresh token is addressed to this service itself, never to resource servers.
        let refresh_audience = format!("{}#refresh", settings.issuer);
        Tokens {
            access: Family::new(
                keys.access,
                ACCESS_TYP,
                &settings.issuer,
                &settings.audience,
                leeway,
            ),
            refresh: Family::new(
                keys.refresh,
                REFRESH_TYP,
                &settings.issuer,
                &refresh_audience,
                leeway,
            ),
            issuer: settings.issuer.clone(),
            access_ttl: i64::try_from(settings.access_ttl.as_secs()).unwrap_or(i64::MAX),
        }
    }

    pub fn access_ttl(&self) -> i64 {
        self.access_ttl
    }

    pub fn issue_access(
        &self,
        user_id: &str,
        username: &str,
        roles: Vec<String>,
        sid: &str,
        now: i64,
    ) -> Result<IssuedAccess, Error> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.access.audience.clone(),
            sub: user_id.to_string(),
            exp: now + self.access_ttl,
            nbf: now,
            iat: now,
            jti: Uuid::new_v4().to_string(),
            sid: sid.to_string(),
            roles,
            username: username.to_string(),
        };
        let token = self.access.sign(&claims)?;
        Ok(IssuedAccess { token, claims })
    }

    /// Signs a refresh token from its stored row. The same row always yields the same token
    /// (HMAC is deterministic), which is what lets the reuse grace hand out the same child.
    pub fn sign_refresh(
        &self,
        jti: &str,
        sid: &str,
        user_id: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<String, Error> {
        self.refresh.sign(&RefreshClaims {
            iss: self.issuer.clone(),
            aud: self.refresh.audience.clone(),
            sub: user_id.to_string(),
            exp: expires_at,
            nbf: issued_at,
            iat: issued_at,
            jti: jti.to_string(),
            sid: sid.to_string(),
        })
    }

    pub fn check_access(&self, token: &str, expiry: Expiry) -> Result<AccessClaims, Error> {
        let claims: AccessClaims = self.access.check(token, expiry)?;
        if !is_uuid(&claims.sub) || !is_uuid(&claims.sid) || claims.jti.is_empty() {
            return Err(Error::InvalidToken("token is invalid"));
        }
        Ok(claims)
    }

    pub fn check_refresh(&self, token: &str, expiry: Expiry) -> Result<RefreshClaims, Error> {
        let claims: RefreshClaims = self.refresh.check(token, expiry)?;
        if !is_uuid(&claims.sub) || !is_uuid(&claims.sid) || !is_uuid(&claims.jti) {
            return Err(Error::InvalidToken("token is invalid"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{SigningKey, generate};
    use crate::settings::SigningAlgorithm;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
    use secrecy::ExposeSecret;
    use std::time::Duration;

    fn settings() -> TokenSettings {
        TokenSettings {
            access_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(3600),
            session_ttl: None,
            reuse_grace: Duration::from_secs(10),
            leeway: Duration::from_secs(0),
            issuer: "iss".into(),
            audience: "aud".into(),
        }
    }

    fn key_set(alg: SigningAlgorithm, kid: &str) -> (KeySet, String) {
        let material = generate(alg).unwrap();
        let text = material.expose_secret().to_string();
        let (enc, dec, algorithm) = match alg {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(&text).unwrap();
                (
                    EncodingKey::from_ed_pem(text.as_bytes()).unwrap(),
                    DecodingKey::from_ed_der(&sk.verifying_key().to_bytes()),
                    Algorithm::EdDSA,
                )
            }
            SigningAlgorithm::HS256 => (
                EncodingKey::from_secret(text.as_bytes()),
                DecodingKey::from_secret(text.as_bytes()),
                Algorithm::HS256,
            ),
            SigningAlgorithm::ES256 => unreachable!("not used here"),
        };
        (
            KeySet {
                signing: SigningKey {
                    kid: kid.into(),
                    algorithm,
                    key: enc,
                },
                verifying: HashMap::from([(
                    kid.to_string(),
                    VerifyingKey {
                        algorithm,
                        key: dec,
                    },
                )]),
            },
            text,
        )
    }

    fn tokens() -> (Tokens, String) {
        let (access, _) = key_set(SigningAlgorithm::EdDSA, "a1");
        let (refresh, secret) = key_set(SigningAlgorithm::HS256, "r1");
        (Tokens::new(Keys { access, refresh }, &settings()), secret)
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn uid() -> String {
        Uuid::new_v4().to_string()
    }

    /// Re-encodes a token's parts by hand, for forging.
    fn forge(header: serde_json::Value, claims: &serde_json::Value, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            sig
        )
    }

    #[test]
    fn access_round_trip() {
        let (t, _) = tokens();
        let (sub, sid) = (uid(), uid());
        let issued = t
            .issue_access(&sub, "alice", vec!["user".into()], &sid, now())
            .unwrap();
        let claims = t.check_access(&issued.token, Expiry::Enforce).unwrap();
        assert_eq!(claims, issued.claims);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some("a1"));
        assert_eq!(header.alg, Algorithm::EdDSA);
    }

    #[test]
    fn kinds_are_not_interchangeable() {
        let (t, _) = tokens();
        let (sub, sid, jti) = (uid(), uid(), uid());
        let n = now();
        let rt = t.sign_refresh(&jti, &sid, &sub, n, n + 60).unwrap();
        let at = t.issue_access(&sub, "a", vec![], &sid, n).unwrap().token;
        assert!(matches!(
            t.check_access(&rt, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        assert!(matches!(
            t.check_refresh(&at, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        assert!(t.check_refresh(&rt, Expiry::Enforce).is_ok());
    }

    #[test]
    fn refresh_signing_is_deterministic() {
        let (t, _) = tokens();
        let (sub, sid, jti) = (uid(), uid(), uid());
        let a = t.sign_refresh(&jti, &sid, &sub, 100, now() + 60).unwrap();
        let b = t.sign_refresh(&jti, &sid, &sub, 100, now() + 60).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn expired_tokens_and_ignore_mode() {
        let (t, _) = tokens();
        let (sub, sid) = (uid(), uid());
        let old = now() - 1000;
        let at = t.issue_access(&sub, "a", vec![], &sid, old).unwrap().token;
        assert!(matches!(
            t.check_access(&at, Expiry::Enforce),
            Err(Error::TokenExpired)
        ));
        assert!(t.check_access(&at, Expiry::Ignore).is_ok());
    }

    #[test]
    fn alg_none_and_alg_swaps_are_refused() {
        let (t, refresh_secret) = tokens();
        let n = now();
        let claims = serde_json::json!({
            "iss": "iss", "aud": "aud", "sub": uid(), "exp": n + 60, "nbf": n, "iat": n,
            "jti": uid(), "sid": uid(), "roles": ["admin"], "username": "mallory"
        });
        let none = forge(
            serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": "a1"}),
            &claims,
            "",
        );
        assert!(matches!(
            t.check_access(&none, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        // HS256 "signed" with a secret the attacker knows, under the EdDSA key's kid.
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some("a1".into());
        let swapped = jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_secret(refresh_secret.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            t.check_access(&swapped, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let (t, _) = tokens();
        let (other, _) = tokens();
        let (sub, sid) = (uid(), uid());
        let at = t
            .issue_access(&sub, "a", vec!["user".into()], &sid, now())
            .unwrap()
            .token;
        // Same kid, different key.
        let foreign = other
            .issue_access(&sub, "a", vec![], &sid, now())
            .unwrap()
            .token;
        assert!(matches!(
            t.check_access(&foreign, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        // Swap the payload for one with more roles, keep the signature.
        let parts: Vec<&str> = at.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["admin"]);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert!(matches!(
            t.check_access(&tampered, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        for garbage in ["", "a.b.c", "....", "not a token", &"x".repeat(9000)] {
            assert!(matches!(
                t.check_access(garbage, Expiry::Enforce),
                Err(Error::InvalidToken(_))
            ));
        }
    }

    #[test]
    fn unknown_kid_wrong_typ_and_missing_claims() {
        let (t, _) = tokens();
        let (sub, sid) = (uid(), uid());
        let at = t
            .issue_access(&sub, "a", vec![], &sid, now())
            .unwrap()
            .token;
        let parts: Vec<&str> = at.split('.').collect();
        for header in [
            serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "zz"}),
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "a1"}),
            serde_json::json!({"alg": "EdDSA", "kid": "a1"}),
        ] {
            let t2 = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                parts[1],
                parts[2]
            );
            assert!(matches!(
                t.check_access(&t2, Expiry::Enforce),
                Err(Error::InvalidToken(_))
            ));
        }
        // Correctly signed, but without `sid`.
        let (access, _) = key_set(SigningAlgorithm::EdDSA, "a1");
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some("a1".into());
        let n = now();
        let claims = serde_json::json!({"iss": "iss", "aud": "aud", "sub": uid(), "exp": n + 60, "nbf": n, "iat": n, "jti": "j", "roles": [], "username": "x"});
        let t3 = Tokens::new(
            Keys {
                access: access.clone(),
                refresh: key_set(SigningAlgorithm::HS256, "r").0,
            },
            &settings(),
        );
        let tok = jsonwebtoken::encode(&h, &claims, &access.signing.key).unwrap();
        assert!(matches!(
            t3.check_access(&tok, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        // Wrong issuer and a future nbf.
        let mut bad = claims.clone();
        bad["sid"] = serde_json::json!(uid());
        bad["iss"] = serde_json::json!("someone-else");
        let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
        assert!(matches!(
            t3.check_access(&tok, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        bad["iss"] = serde_json::json!("iss");
        bad["nbf"] = serde_json::json!(n + 600);
        let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
        assert!(matches!(
            t3.check_access(&tok, Expiry::Enforce),
            Err(Error::InvalidToken(_))
        ));
        bad["nbf"] = serde_json::json!(n);
        let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
        assert!(t3.check_access(&tok, Expiry::Enforce).is_ok());
    }
}
