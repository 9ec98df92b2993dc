//! Unit tests of token issuing and checking; times are fixed, never the system clock.

use super::*;
use crate::config::{SigningAlgorithm, Span};
use crate::security::keys::{SigningKey, generate};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use secrecy::ExposeSecret;

fn settings() -> TokenSettings {
    TokenSettings {
        access_ttl: Span::secs(300),
        refresh_ttl: Span::secs(3600),
        session_ttl: None,
        reuse_grace: Span::secs(10),
        leeway: Span::secs(0),
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
                    public: None,
                    fingerprint: crate::security::keys::fingerprint(kid.as_bytes()),
                },
            )]),
        },
        text,
    )
}

fn tokens() -> (Tokens, String) {
    let (access, _) = key_set(SigningAlgorithm::EdDSA, "a1");
    let (refresh, secret) = key_set(SigningAlgorithm::HS256, "r1");
    (
        Tokens::new(
            Keys {
                access,
                refresh,
                client_secrets: crate::security::client_secrets::ClientSecrets::new(b"k"),
            },
            &settings(),
        ),
        secret,
    )
}

/// The tests' fixed "now": tokens are checked against the time they are given.
const NOW: i64 = 1_800_000_000;

fn now() -> i64 {
    NOW
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn access(t: &Tokens, user: UserId, sid: SessionId, roles: &[&str], at: i64) -> String {
    t.issue_access(
        AccessGrant {
            user_id: user,
            username: "alice",
            roles: roles.iter().map(|r| r.to_string()).collect(),
            session_id: sid,
        },
        at,
    )
    .unwrap()
}

fn refresh(t: &Tokens, jti: TokenId, sid: SessionId, user: UserId, iat: i64, exp: i64) -> String {
    t.sign_refresh(&RefreshGrant {
        jti,
        session_id: sid,
        user_id: user,
        issued_at: iat,
        expires_at: exp,
    })
    .unwrap()
}

fn ids() -> (UserId, SessionId) {
    (UserId::random(), SessionId::random())
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
    let (sub, sid) = ids();
    let token = access(&t, sub, sid, &["user"], now());
    let claims = t.check_access(&token, Expiry::Enforce, now()).unwrap();
    assert_eq!((claims.sub, claims.sid), (sub, sid));
    assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 300));
    assert_eq!(claims.roles, ["user"]);
    assert_eq!(claims.username, "alice");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some("a1"));
    assert_eq!(header.alg, Algorithm::EdDSA);
}

#[test]
fn kinds_are_not_interchangeable() {
    let (t, _) = tokens();
    let (sub, sid) = ids();
    let n = now();
    let rt = refresh(&t, TokenId::random(), sid, sub, n, n + 60);
    let at = access(&t, sub, sid, &[], n);
    assert!(matches!(
        t.check_access(&rt, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
    assert!(matches!(
        t.check_refresh(&at, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
    assert!(t.check_refresh(&rt, Expiry::Enforce, now()).is_ok());
}

#[test]
fn refresh_signing_is_deterministic() {
    let (t, _) = tokens();
    let (sub, sid) = ids();
    let jti = TokenId::random();
    let a = refresh(&t, jti, sid, sub, 100, now() + 60);
    let b = refresh(&t, jti, sid, sub, 100, now() + 60);
    assert_eq!(a, b);
}

#[test]
fn expired_tokens_and_ignore_mode() {
    let (t, _) = tokens();
    let (sub, sid) = ids();
    let at = access(&t, sub, sid, &[], NOW);
    // Valid through its last second, expired one second later (no leeway configured).
    assert!(t.check_access(&at, Expiry::Enforce, NOW + 300).is_ok());
    assert_eq!(
        t.check_access(&at, Expiry::Enforce, NOW + 301),
        Err(TokenError::Expired)
    );
    assert!(t.check_access(&at, Expiry::Ignore, NOW + 10_000).is_ok());
    // Not valid before it was issued.
    assert!(matches!(
        t.check_access(&at, Expiry::Enforce, NOW - 1),
        Err(TokenError::Invalid(_))
    ));
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
        t.check_access(&none, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
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
        t.check_access(&swapped, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn tampering_and_foreign_keys_are_refused() {
    let (t, _) = tokens();
    let (other, _) = tokens();
    let (sub, sid) = ids();
    let at = access(&t, sub, sid, &["user"], now());
    // Same kid, different key.
    let foreign = access(&other, sub, sid, &[], now());
    assert!(matches!(
        t.check_access(&foreign, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
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
        t.check_access(&tampered, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
    for garbage in ["", "a.b.c", "....", "not a token", &"x".repeat(9000)] {
        assert!(matches!(
            t.check_access(garbage, Expiry::Enforce, now()),
            Err(TokenError::Invalid(_))
        ));
    }
}

#[test]
fn unknown_kid_wrong_typ_and_missing_claims() {
    let (t, _) = tokens();
    let (sub, sid) = ids();
    let at = access(&t, sub, sid, &[], now());
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
            t.check_access(&t2, Expiry::Enforce, now()),
            Err(TokenError::Invalid(_))
        ));
    }
    // Correctly signed, but without `sid`, then with ids that are not UUIDs.
    let (access, _) = key_set(SigningAlgorithm::EdDSA, "a1");
    let mut h = Header::new(Algorithm::EdDSA);
    h.typ = Some("at+jwt".into());
    h.kid = Some("a1".into());
    let n = now();
    let claims = serde_json::json!({"iss": "iss", "aud": "aud", "sub": uid(), "exp": n + 60, "nbf": n, "iat": n, "jti": uid(), "roles": [], "username": "x"});
    let t3 = Tokens::new(
        Keys {
            access: access.clone(),
            refresh: key_set(SigningAlgorithm::HS256, "r").0,
            client_secrets: crate::security::client_secrets::ClientSecrets::new(b"k"),
        },
        &settings(),
    );
    let tok = jsonwebtoken::encode(&h, &claims, &access.signing.key).unwrap();
    assert!(matches!(
        t3.check_access(&tok, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
    for (field, value) in [("sid", "s-1"), ("sub", "42"), ("jti", "")] {
        let mut bad = claims.clone();
        bad["sid"] = serde_json::json!(uid());
        bad[field] = serde_json::json!(value);
        let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
        assert!(
            matches!(
                t3.check_access(&tok, Expiry::Enforce, now()),
                Err(TokenError::Invalid(_))
            ),
            "{field}"
        );
    }
    // Wrong issuer and a future nbf.
    let mut bad = claims.clone();
    bad["sid"] = serde_json::json!(uid());
    bad["iss"] = serde_json::json!("someone-else");
    let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
    assert!(matches!(
        t3.check_access(&tok, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
    bad["iss"] = serde_json::json!("iss");
    bad["nbf"] = serde_json::json!(n + 600);
    let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
    assert!(matches!(
        t3.check_access(&tok, Expiry::Enforce, now()),
        Err(TokenError::Invalid(_))
    ));
    bad["nbf"] = serde_json::json!(n);
    let tok = jsonwebtoken::encode(&h, &bad, &access.signing.key).unwrap();
    assert!(t3.check_access(&tok, Expiry::Enforce, now()).is_ok());
}
