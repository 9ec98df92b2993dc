//! Signing and verification keys: loaded from configuration, or generated on first start and
//! kept in the data directory (mode 0600) so that a restart keeps every session valid.
//!
//! Each key fixes its own algorithm; the algorithm named in a token's header is only ever
//! compared against it, never used to choose how to verify.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::{Settings, SettingsError, SigningAlgorithm};

/// Shortest accepted HMAC secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// A key that verifies tokens of exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    /// The public key's bytes, for publishing (Ed25519: 32 bytes; P-256: the uncompressed
    /// SEC1 point). `None` for an HMAC secret, which is never published.
    pub public: Option<Vec<u8>>,
}

/// The active key for new tokens.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: EncodingKey,
}

/// One family of keys: one signing key and every key (by `kid`) accepted when verifying.
#[derive(Clone)]
pub struct KeySet {
    pub signing: SigningKey,
    pub verifying: HashMap<String, VerifyingKey>,
}

impl KeySet {
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// The public keys as a JSON Web Key Set (RFC 7517), by `kid`, in `kid` order: every key
    /// that verifies tokens, the active one and those being retired. HMAC secrets are never
    /// published, so an HS256 set is empty.
    pub fn jwks(&self) -> JwkSet {
        use jsonwebtoken::jwk::{
            AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
            EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
            PublicKeyUse,
        };
        let mut kids: Vec<&String> = self.verifying.keys().collect();
        kids.sort();
        let keys = kids
            .into_iter()
            .filter_map(|kid| {
                let key = &self.verifying[kid];
                let public = key.public.as_deref()?;
                let (algorithm, key_algorithm) = match key.algorithm {
                    Algorithm::EdDSA => (
                        AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                            key_type: OctetKeyPairType::OctetKeyPair,
                            curve: EllipticCurve::Ed25519,
                            x: URL_SAFE_NO_PAD.encode(public),
                        }),
                        KeyAlgorithm::EdDSA,
                    ),
                    // The uncompressed point: 0x04, then x and y (32 bytes each).
                    Algorithm::ES256 if public.len() == 65 => (
                        AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                            key_type: EllipticCurveKeyType::EC,
                            curve: EllipticCurve::P256,
                            x: URL_SAFE_NO_PAD.encode(&public[1..33]),
                            y: URL_SAFE_NO_PAD.encode(&public[33..65]),
                        }),
                        KeyAlgorithm::ES256,
                    ),
                    _ => return None,
                };
                Some(Jwk {
                    common: CommonParameters {
                        public_key_use: Some(PublicKeyUse::Signature),
                        key_id: Some(kid.clone()),
                        key_algorithm: Some(key_algorithm),
                        ..CommonParameters::default()
                    },
                    algorithm,
                })
            })
            .collect();
        JwkSet { keys }
    }
}

pub use jsonwebtoken::jwk::JwkSet;

/// Access-token keys (publishable public halves) and the refresh-token key (secret, local).
#[derive(Clone)]
pub struct Keys {
    pub access: KeySet,
    pub refresh: KeySet,
    /// Hashes client secrets (keyed from the refresh secret).
    pub client_secrets: crate::security::client_secrets::ClientSecrets,
}

fn jwt_algorithm(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// Derives a key id from the public material, so the same key always has the same `kid`.
fn derive_kid(alg: SigningAlgorithm, public: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(alg.as_str().as_bytes());
    h.update(b":");
    h.update(public);
    let digest = URL_SAFE_NO_PAD.encode(h.finalize());
    digest[..16].to_string()
}

/// Parses private key material (or an HMAC secret) for `alg`.
/// Returns the signing key, its verifying half, and the bytes the `kid` is derived from.
fn parse_private(
    setting: &str,
    alg: SigningAlgorithm,
    material: &SecretString,
) -> Result<(EncodingKey, VerifyingKey, Vec<u8>), SettingsError> {
    let bad = |what: &str| SettingsError(format!("{setting}: {what}"));
    let text = material.expose_secret();
    match alg {
        SigningAlgorithm::EdDSA => {
            let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
                .map_err(|_| bad("not an Ed25519 private key in PKCS#8 PEM"))?;
            let encoding = EncodingKey::from_ed_pem(text.as_bytes())
                .map_err(|_| bad("not an Ed25519 private key in PKCS#8 PEM"))?;
            let public = sk.verifying_key().to_bytes().to_vec();
            let verifying = VerifyingKey {
                algorithm: Algorithm::EdDSA,
                key: DecodingKey::from_ed_der(&public),
                public: Some(public.clone()),
            };
            Ok((encoding, verifying, public))
        }
        SigningAlgorithm::ES256 => {
            let sk = p256::SecretKey::from_pkcs8_pem(text)
                .map_err(|_| bad("not a P-256 private key in PKCS#8 PEM"))?;
            let encoding = EncodingKey::from_ec_pem(text.as_bytes())
                .map_err(|_| bad("not a P-256 private key in PKCS#8 PEM"))?;
            let public = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &sk.public_key(),
                false,
            )
            .as_bytes()
            .to_vec();
            let verifying = VerifyingKey {
                algorithm: Algorithm::ES256,
                key: DecodingKey::from_ec_der(&public),
                public: Some(public.clone()),
            };
            Ok((encoding, verifying, public))
        }
        SigningAlgorithm::HS256 => {
            let secret = text.as_bytes();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(bad(&format!(
                    "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes"
                )));
            }
            let verifying = VerifyingKey {
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
                public: None,
            };
            Ok((
                EncodingKey::from_secret(secret),
                verifying,
                Sha256::digest(secret).to_vec(),
            ))
        }
    }
}

/// Parses a verification-only key: a public key PEM, or the secret for HS256. A private key
/// PEM is accepted too (its public half is used), so a retired signing key file can be
/// listed as it is.
fn parse_public(
    setting: &str,
    alg: SigningAlgorithm,
    material: &SecretString,
) -> Result<VerifyingKey, SettingsError> {
    let bad = |what: &str| SettingsError(format!("{setting}: {what}"));
    let text = material.expose_secret();
    if text.contains("PRIVATE KEY") {
        return parse_private(setting, alg, material).map(|(_, v, _)| v);
    }
    match alg {
        SigningAlgorithm::EdDSA => {
            let vk = ed25519_dalek::VerifyingKey::from_public_key_pem(text)
                .map_err(|_| bad("not an Ed25519 public key PEM"))?;
            Ok(VerifyingKey {
                algorithm: Algorithm::EdDSA,
                key: DecodingKey::from_ed_der(&vk.to_bytes()),
                public: Some(vk.to_bytes().to_vec()),
            })
        }
        SigningAlgorithm::ES256 => {
            let pk = p256::PublicKey::from_public_key_pem(text)
                .map_err(|_| bad("not a P-256 public key PEM"))?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&pk, false);
            Ok(VerifyingKey {
                algorithm: Algorithm::ES256,
                key: DecodingKey::from_ec_der(point.as_bytes()),
                public: Some(point.as_bytes().to_vec()),
            })
        }
        SigningAlgorithm::HS256 => parse_private(setting, alg, material).map(|(_, v, _)| v),
    }
}

/// The public key of private key material, as PEM (for handing to verifiers).
pub fn public_pem(alg: SigningAlgorithm, material: &SecretString) -> Result<String, SettingsError> {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let err = |e: String| SettingsError(format!("keys: {e}"));
    let text = material.expose_secret();
    match alg {
        SigningAlgorithm::EdDSA => ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map_err(|e| err(e.to_string()))?
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| err(e.to_string())),
        SigningAlgorithm::ES256 => p256::SecretKey::from_pkcs8_pem(text)
            .map_err(|e| err(e.to_string()))?
            .public_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| err(e.to_string())),
        SigningAlgorithm::HS256 => Err(err("HS256 keys have no public half".into())),
    }
}

/// Fresh private key material for `alg`, in the form `parse_private` reads.
pub fn generate(alg: SigningAlgorithm) -> Result<SecretString, SettingsError> {
    let err = |e: String| SettingsError(format!("keys: cannot generate a key: {e}"));
    let text = match alg {
        SigningAlgorithm::EdDSA => {
            let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
            sk.to_pkcs8_pem(Default::default())
                .map_err(|e| err(e.to_string()))?
                .to_string()
        }
        SigningAlgorithm::ES256 => {
            let sk = p256::SecretKey::random(&mut OsRng);
            sk.to_pkcs8_pem(Default::default())
                .map_err(|e| err(e.to_string()))?
                .to_string()
        }
        SigningAlgorithm::HS256 => {
            let mut bytes = [0u8; 64];
            OsRng.fill_bytes(&mut bytes);
            URL_SAFE_NO_PAD.encode(bytes)
        }
    };
    // Stored with a trailing newline and read back trimmed: keep the two forms identical.
    Ok(SecretString::from(text.trim_end().to_string()))
}

/// Reads the key at `path`, or generates one there (mode 0600) when it does not exist yet.
fn load_or_generate(
    setting: &str,
    path: &Path,
    alg: SigningAlgorithm,
) -> Result<SecretString, SettingsError> {
    if path.exists() {
        return crate::config::read_secret_file(setting, path);
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                SettingsError(format!("{setting}: cannot create {}: {e}", dir.display()))
            })?;
    }
    let material = generate(alg)?;
    let mut contents = material.expose_secret().as_bytes().to_vec();
    contents.push(b'\n');
    // Written whole to a private temporary file, then linked into place: an instance sharing
    // the directory never reads a half-written key, and a crash leaves no empty key file.
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let placed =
        write_private_new(&tmp, &contents).and_then(|()| match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                log::warn!(
                    "cannot hard-link in {} ({e}); writing {setting}'s key in place",
                    path.parent().unwrap_or(path).display()
                );
                write_private_new(path, &contents)
            }
            other => other,
        });
    // The temporary name goes whatever happened; the key lives on under `path` if placed.
    let _ = std::fs::remove_file(&tmp);
    contents.fill(0);
    match placed {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            log::info!(
                "generated a new {} key for {setting} at {} (keep this file to keep sessions valid across restarts)",
                alg.as_str(),
                path.display()
            );
            Ok(material)
        }
        // Another instance sharing the data directory won the race: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            crate::config::read_secret_file(setting, path)
        }
        Err(e) => Err(SettingsError(format!(
            "{setting}: cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Creates `path` (it must not exist) readable by this user only, with `contents`, on disk.
fn write_private_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

fn generated_access_key_path(dir: &Path, alg: SigningAlgorithm) -> PathBuf {
    match alg {
        SigningAlgorithm::EdDSA => dir.join("access-eddsa.pem"),
        SigningAlgorithm::ES256 => dir.join("access-es256.pem"),
        SigningAlgorithm::HS256 => dir.join("access-hs256.secret"),
    }
}

impl Keys {
    /// Loads every configured key, generating (and storing) the ones that are not configured.
    pub fn load(settings: &Settings) -> Result<Keys, SettingsError> {
        Keys::load_with(settings, load_or_generate)
    }

    /// Validates every configured key without writing anything: a key that would be
    /// generated is read if it exists already, and stands in as a throwaway one otherwise.
    pub fn check(settings: &Settings) -> Result<Keys, SettingsError> {
        Keys::load_with(settings, |setting, path, alg| {
            if path.exists() {
                crate::config::read_secret_file(setting, path)
            } else {
                generate(alg)
            }
        })
    }

    fn load_with(
        settings: &Settings,
        missing: impl Fn(&str, &Path, SigningAlgorithm) -> Result<SecretString, SettingsError>,
    ) -> Result<Keys, SettingsError> {
        let k = &settings.keys;
        let dir = settings.keys_dir();

        // Access tokens.
        let (setting, material) = match (&k.signing_key, &k.signing_key_file) {
            (Some(s), _) => ("keys.signing_key", s.clone()),
            (None, Some(path)) => (
                "keys.signing_key_file",
                crate::config::read_secret_file("keys.signing_key_file", path)?,
            ),
            (None, None) => (
                "keys.signing_key",
                missing(
                    "keys.signing_key",
                    &generated_access_key_path(&dir, k.algorithm),
                    k.algorithm,
                )?,
            ),
        };
        let (encoding, verifying, public) = parse_private(setting, k.algorithm, &material)?;
        let kid = k
            .kid
            .clone()
            .unwrap_or_else(|| derive_kid(k.algorithm, &public));
        let mut access_verifying = HashMap::from([(kid.clone(), verifying)]);
        for (i, extra) in k.verification_keys.iter().enumerate() {
            let setting = format!("keys.verification_keys[{i}]");
            let material = match (&extra.key, &extra.key_file) {
                (Some(s), None) => s.clone(),
                (None, Some(path)) => crate::config::read_secret_file(&setting, path)?,
                _ => {
                    return Err(SettingsError(format!(
                        "{setting}: set exactly one of key or key_file"
                    )));
                }
            };
            if extra.kid.is_empty() || access_verifying.contains_key(&extra.kid) {
                return Err(SettingsError(format!(
                    "{setting}.kid: must be non-empty and unique (\"{}\")",
                    extra.kid
                )));
            }
            let key = parse_public(&setting, extra.algorithm, &material)?;
            access_verifying.insert(extra.kid.clone(), key);
        }
        let access = KeySet {
            signing: SigningKey {
                kid,
                algorithm: jwt_algorithm(k.algorithm),
                key: encoding,
            },
            verifying: access_verifying,
        };

        // Refresh tokens: an HMAC key that never leaves this service.
        let (setting, material) = match (&k.refresh_secret, &k.refresh_secret_file) {
            (Some(s), _) => ("keys.refresh_secret", s.clone()),
            (None, Some(path)) => (
                "keys.refresh_secret_file",
                crate::config::read_secret_file("keys.refresh_secret_file", path)?,
            ),
            (None, None) => (
                "keys.refresh_secret",
                missing(
                    "keys.refresh_secret",
                    &dir.join("refresh-hs256.secret"),
                    SigningAlgorithm::HS256,
                )?,
            ),
        };
        let (encoding, verifying, public) =
            parse_private(setting, SigningAlgorithm::HS256, &material)?;
        let client_secrets = crate::security::client_secrets::ClientSecrets::new(
            material.expose_secret().as_bytes(),
        );
        let kid = format!("r-{}", derive_kid(SigningAlgorithm::HS256, &public));
        let refresh = KeySet {
            signing: SigningKey {
                kid: kid.clone(),
                algorithm: Algorithm::HS256,
                key: encoding,
            },
            verifying: HashMap::from([(kid, verifying)]),
        };
        Ok(Keys {
            access,
            refresh,
            client_secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_for_every_algorithm() {
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::HS256,
        ] {
            let material = generate(alg).unwrap();
            let (_, v, public) = parse_private("k", alg, &material).unwrap();
            assert_eq!(v.algorithm, jwt_algorithm(alg));
            // Same key, same kid; another key, another kid.
            let other = generate(alg).unwrap();
            let (_, _, other_public) = parse_private("k", alg, &other).unwrap();
            assert_eq!(derive_kid(alg, &public), derive_kid(alg, &public));
            assert_ne!(derive_kid(alg, &public), derive_kid(alg, &other_public));
        }
    }

    #[test]
    fn wrong_material_is_refused_with_the_setting_name() {
        let ed = generate(SigningAlgorithm::EdDSA).unwrap();
        let e = parse_private("keys.signing_key", SigningAlgorithm::ES256, &ed)
            .err()
            .unwrap();
        assert!(e.to_string().contains("keys.signing_key"), "{e}");
        let short = SecretString::from("too-short".to_string());
        let e = parse_private("keys.refresh_secret", SigningAlgorithm::HS256, &short)
            .err()
            .unwrap();
        assert!(e.to_string().contains("at least 32"), "{e}");
        let garbage = SecretString::from(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".to_string(),
        );
        assert!(parse_private("k", SigningAlgorithm::EdDSA, &garbage).is_err());
    }

    #[test]
    fn verification_keys_from_public_or_private_pem() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let private = generate(alg).unwrap();
            let public = SecretString::from(public_pem(alg, &private).unwrap());
            assert!(public.expose_secret().contains("PUBLIC KEY"));
            let (enc, _, _) = parse_private("k", alg, &private).unwrap();
            let mut header = jsonwebtoken::Header::new(jwt_algorithm(alg));
            header.kid = Some("k".into());
            let claims = serde_json::json!({"exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
            for material in [&public, &private] {
                let v = parse_public("k", alg, material).unwrap();
                let mut validation = jsonwebtoken::Validation::new(v.algorithm);
                validation.validate_aud = false;
                assert!(
                    jsonwebtoken::decode::<serde_json::Value>(&token, &v.key, &validation).is_ok()
                );
            }
        }
    }

    #[test]
    fn generated_files_are_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/access-eddsa.pem");
        let first = load_or_generate("k", &path, SigningAlgorithm::EdDSA).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_generate("k", &path, SigningAlgorithm::EdDSA).unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
    }

    #[test]
    fn instances_racing_on_one_directory_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys/refresh-hs256.secret");
            let keys: Vec<String> = std::thread::scope(|s| {
                let racers: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            load_or_generate("k", &path, SigningAlgorithm::HS256)
                                .unwrap()
                                .expose_secret()
                                .to_string()
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            assert!(keys.iter().all(|k| k == &keys[0] && k.len() >= 32));
            let names = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
            assert_eq!(names, 1, "temporary files left behind");
        }
    }
}
