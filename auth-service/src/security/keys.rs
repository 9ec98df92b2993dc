//! Signing and verification keys: loaded from configuration, or generated on first start and
//! kept in the data directory (mode 0600) so that a restart keeps every session valid.
//!
//! A generated access-token key can be rotated (`auth-service keys rotate`, [`rotate`]): the
//! new key replaces the active file, and the old key's public half (an HS256 key's secret)
//! moves to `retired/` under a name that records when it was retired. Loading accepts a
//! retired key until every token it can have signed has expired ([`retired_until`]); running
//! servers re-read the directory every `revocation.poll_interval`.
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
    /// SHA-256 of the key material (the public key, or the HMAC secret): tells two keys
    /// with the same `kid` apart. Never published or logged.
    pub fingerprint: [u8; 32],
}

/// [`VerifyingKey::fingerprint`] of some key material.
pub fn fingerprint(material: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(material).into()
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
                fingerprint: fingerprint(&public),
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
                fingerprint: fingerprint(&public),
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
                fingerprint: fingerprint(secret),
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
                fingerprint: fingerprint(&vk.to_bytes()),
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
                fingerprint: fingerprint(point.as_bytes()),
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

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Keys {
    /// Loads every configured key, generating (and storing) the ones that are not configured.
    pub fn load(settings: &Settings) -> Result<Keys, SettingsError> {
        Keys::load_at(settings, unix_now())
    }

    /// [`Keys::load`], with retired keys judged against `now` (Unix seconds).
    pub fn load_at(settings: &Settings, now: i64) -> Result<Keys, SettingsError> {
        Keys::load_with(settings, now, load_or_generate)
    }

    /// Reads the keys as they are on disk now, creating nothing: what a running server
    /// re-reads to notice a rotation.
    pub fn reload_at(settings: &Settings, now: i64) -> Result<Keys, SettingsError> {
        Keys::load_with(settings, now, |setting, path, _| {
            crate::config::read_secret_file(setting, path)
        })
    }

    /// Validates every configured key without writing anything: a key that would be
    /// generated is read if it exists already, and stands in as a throwaway one otherwise.
    pub fn check(settings: &Settings) -> Result<Keys, SettingsError> {
        Keys::load_with(settings, unix_now(), |setting, path, alg| {
            if path.exists() {
                crate::config::read_secret_file(setting, path)
            } else {
                generate(alg)
            }
        })
    }

    fn load_with(
        settings: &Settings,
        now: i64,
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
        if generated_access_key(settings) {
            let until = |retired_at| retired_until(settings, retired_at);
            for retired in retired_keys(&dir, k.algorithm) {
                if now > until(retired.retired_at) || access_verifying.contains_key(&retired.kid) {
                    continue;
                }
                match retired.key {
                    Ok(key) => {
                        access_verifying.insert(retired.kid, key);
                    }
                    // One damaged file must not stop the service or hide a new active key.
                    Err(e) => log::warn!("ignoring a retired access-token key: {e}"),
                }
            }
        }
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

/// Whether the access-token key is the generated one in `keys.dir` (so `keys rotate` may
/// replace it), rather than one given by configuration.
fn generated_access_key(settings: &Settings) -> bool {
    settings.keys.signing_key.is_none() && settings.keys.signing_key_file.is_none()
}

/// How long after its retirement a key may still have signed a token: a replica goes on
/// signing with it until it next reads `keys.dir`, which it does every
/// `revocation.poll_interval`; twice that, rounded up to whole seconds, bounds it.
pub fn reload_grace_secs(settings: &Settings) -> i64 {
    let poll = settings.revocation.poll_interval.get();
    i64::try_from(poll.as_millis().saturating_mul(2).div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Until when (Unix seconds, inclusive) a key retired at `retired_at` must still verify:
/// the last token it signed expires `tokens.access_ttl` after the last replica stopped
/// signing with it, and is accepted `tokens.leeway` longer.
pub fn retired_until(settings: &Settings, retired_at: i64) -> i64 {
    retired_at
        .saturating_add(reload_grace_secs(settings))
        .saturating_add(settings.tokens.access_ttl.as_secs_i64())
        .saturating_add(settings.tokens.leeway.as_secs_i64())
}

/// A retired access-token key, as found in `keys.dir/retired`.
struct RetiredKey {
    path: PathBuf,
    kid: String,
    retired_at: i64,
    key: Result<VerifyingKey, SettingsError>,
}

fn retired_dir(dir: &Path) -> PathBuf {
    dir.join("retired")
}

/// `access-eddsa.retired-<unix time>.<kid>.pem` (the extension as the active file's).
fn retired_key_name(alg: SigningAlgorithm, retired_at: i64, kid: &str) -> String {
    let active = generated_access_key_path(Path::new(""), alg);
    let active = active.to_string_lossy();
    let (stem, ext) = active.split_once('.').unwrap_or((&active, ""));
    format!("{stem}.retired-{retired_at}.{kid}.{ext}")
}

/// The retirement time and `kid` a retired key's file name records, for `alg`'s files.
fn parse_retired_key_name(alg: SigningAlgorithm, name: &str) -> Option<(i64, String)> {
    let active = generated_access_key_path(Path::new(""), alg);
    let active = active.to_string_lossy();
    let (stem, ext) = active.split_once('.')?;
    let rest = name
        .strip_prefix(stem)?
        .strip_prefix(".retired-")?
        .strip_suffix(ext)?
        .strip_suffix('.')?;
    let (at, kid) = rest.split_once('.')?;
    let valid_kid = !kid.is_empty()
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_kid {
        return None;
    }
    Some((at.parse().ok()?, kid.to_string()))
}

/// Every retired key of `alg` in `dir/retired`, oldest first; none when there is no such
/// directory. The `kid` is derived from the key itself, as the active key's is.
fn retired_keys(dir: &Path, alg: SigningAlgorithm) -> Vec<RetiredKey> {
    let Ok(entries) = std::fs::read_dir(retired_dir(dir)) else {
        return Vec::new();
    };
    let mut keys: Vec<RetiredKey> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let (retired_at, named_kid) = parse_retired_key_name(alg, name.to_str()?)?;
            let path = entry.path();
            let setting = format!("keys.dir: {}", path.display());
            let key = crate::config::read_secret_file(&setting, &path).and_then(|material| {
                let key = parse_public(&setting, alg, &material)?;
                let kid = derive_kid(alg, &public_bytes(&key, &material));
                if kid == named_kid {
                    Ok(key)
                } else {
                    Err(SettingsError(format!(
                        "{setting}: holds the key {kid}, not {named_kid}"
                    )))
                }
            });
            Some(RetiredKey {
                path,
                kid: named_kid,
                retired_at,
                key,
            })
        })
        .collect();
    keys.sort_by(|a, b| (a.retired_at, &a.kid).cmp(&(b.retired_at, &b.kid)));
    keys
}

/// The bytes a key's `kid` is derived from (see `parse_private`).
fn public_bytes(key: &VerifyingKey, material: &SecretString) -> Vec<u8> {
    key.public
        .clone()
        .unwrap_or_else(|| Sha256::digest(material.expose_secret().as_bytes()).to_vec())
}

/// Writes `contents` to `path` whole, readable by this user only, replacing what is there:
/// through a temporary file renamed into place, so a reader sees the old file or the new.
fn replace_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let placed = write_private_new(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Why `keys rotate` would not rotate.
fn rotation_refused(settings: &Settings) -> Option<String> {
    let k = &settings.keys;
    let configured = if k.signing_key.is_some() {
        Some("keys.signing_key")
    } else if k.signing_key_file.is_some() {
        Some("keys.signing_key_file")
    } else {
        None
    };
    if let Some(setting) = configured {
        return Some(format!(
            "{setting} is set, so the access-token key comes from configuration: rotate it \
             there (configure the new key, and list the old one under keys.verification_keys \
             until tokens.access_ttl has passed)"
        ));
    }
    if k.kid.is_some() {
        return Some(
            "keys.kid is set, and one fixed kid cannot name two keys: unset it to rotate with \
             this command (kids are then derived from the keys)"
                .into(),
        );
    }
    None
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub algorithm: SigningAlgorithm,
    pub new_kid: String,
    /// The key that was active, and until when it stays accepted; `None` when there was no
    /// key yet (one has just been generated).
    pub retired: Option<(String, i64)>,
    /// Retired keys whose time had passed, removed from `keys.dir`.
    pub dropped: Vec<String>,
}

/// Makes a new access-token key active in `keys.dir`: the old key's public half (an HS256
/// key's secret) is first kept under `retired/`, then the new key replaces the active file
/// (both written whole, then renamed into place, so a server reading the directory at any
/// moment finds a complete, consistent set). Retired keys past their time are removed.
pub fn rotate(settings: &Settings, now: i64) -> Result<Rotation, SettingsError> {
    if let Some(why) = rotation_refused(settings) {
        return Err(SettingsError(format!("keys rotate: {why}")));
    }
    let alg = settings.keys.algorithm;
    let dir = settings.keys_dir();
    let active = generated_access_key_path(&dir, alg);
    let io = |what: &str, path: &Path, e: std::io::Error| {
        SettingsError(format!(
            "keys rotate: cannot {what} {}: {e}",
            path.display()
        ))
    };
    if !active.exists() {
        // Nothing to retire: the key a first start would generate (another instance may win
        // the race and generate it; then that one is the active key).
        let material = load_or_generate("keys.signing_key", &active, alg)?;
        let (_, _, public) = parse_private("keys.signing_key", alg, &material)?;
        return Ok(Rotation {
            algorithm: alg,
            new_kid: derive_kid(alg, &public),
            retired: None,
            dropped: Vec::new(),
        });
    }
    let retired = {
        let old = crate::config::read_secret_file("keys.signing_key", &active)?;
        let (_, _, public) = parse_private("keys.signing_key", alg, &old)?;
        let old_kid = derive_kid(alg, &public);
        let kept = match alg {
            SigningAlgorithm::HS256 => old.expose_secret().to_string(),
            _ => public_pem(alg, &old)?,
        };
        let retired_dir = retired_dir(&dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&retired_dir)
            .map_err(|e| io("create", &retired_dir, e))?;
        let path = retired_dir.join(retired_key_name(alg, now, &old_kid));
        let mut contents = format!("{kept}\n").into_bytes();
        let written = replace_private(&path, &contents);
        contents.fill(0);
        written.map_err(|e| io("write", &path, e))?;
        Some((old_kid, retired_until(settings, now)))
    };
    let material = generate(alg)?;
    let (_, _, public) = parse_private("keys.signing_key", alg, &material)?;
    let mut contents = format!("{}\n", material.expose_secret()).into_bytes();
    let written = replace_private(&active, &contents);
    contents.fill(0);
    written.map_err(|e| io("write", &active, e))?;
    let mut dropped = Vec::new();
    for old in retired_keys(&dir, alg) {
        if now > retired_until(settings, old.retired_at) {
            std::fs::remove_file(&old.path).map_err(|e| io("remove", &old.path, e))?;
            dropped.push(old.kid);
        }
    }
    Ok(Rotation {
        algorithm: alg,
        new_kid: derive_kid(alg, &public),
        retired,
        dropped,
    })
}

/// Where an access-token key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Verifies tokens until this time (Unix seconds), then is dropped.
    Retired { until: i64 },
    /// Retired, and past its time: no longer loaded (the next rotation removes its file).
    Expired { since: i64 },
    /// Listed under `keys.verification_keys`: accepted while configured.
    Configured,
    /// A file in `keys.dir/retired` that cannot be read as a key (never loaded).
    Unreadable(String),
}

/// One line of `keys list`: never any key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
}

/// The access-token keys and where each stands at `now`: the active one, those configured
/// as verification keys, and (for a generated key) every retired one still on disk. Reads
/// only; a key not generated yet is reported as an error.
pub fn list(settings: &Settings, now: i64) -> Result<Vec<KeyListing>, SettingsError> {
    let keys = Keys::load_with(settings, now, |setting, path, alg| {
        if path.exists() {
            crate::config::read_secret_file(setting, path)
        } else if setting != "keys.signing_key" {
            // Not listed: a throwaway stands in for a refresh secret not generated yet.
            generate(alg)
        } else {
            Err(SettingsError(format!(
                "{setting}: no key at {} yet (the server generates one when it first \
                 starts; `keys rotate` makes one too)",
                path.display()
            )))
        }
    })?;
    let alg = settings.keys.algorithm;
    let mut out = vec![KeyListing {
        kid: keys.access.signing.kid.clone(),
        algorithm: alg,
        state: KeyState::Active,
    }];
    for extra in &settings.keys.verification_keys {
        out.push(KeyListing {
            kid: extra.kid.clone(),
            algorithm: extra.algorithm,
            state: KeyState::Configured,
        });
    }
    if generated_access_key(settings) {
        for retired in retired_keys(&settings.keys_dir(), alg) {
            if retired.kid == keys.access.signing.kid {
                continue;
            }
            let until = retired_until(settings, retired.retired_at);
            let state = match retired.key {
                Err(e) => KeyState::Unreadable(e.to_string()),
                Ok(_) if now > until => KeyState::Expired { since: until },
                Ok(_) => KeyState::Retired { until },
            };
            out.push(KeyListing {
                kid: retired.kid,
                algorithm: alg,
                state,
            });
        }
    }
    Ok(out)
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

    /// Settings over a fresh data directory: access tokens live 60 s, leeway 5 s, replicas
    /// re-read keys every second (so a retired key is accepted 60 + 5 + 2 s).
    fn rotation_settings(dir: &Path, extra: &[(&str, &str)]) -> Settings {
        let mut env: HashMap<String, String> = [
            ("AUTH__DATA_DIR", dir.display().to_string()),
            ("AUTH__TOKENS__ACCESS_TTL", "60s".into()),
            ("AUTH__TOKENS__LEEWAY", "5s".into()),
            ("AUTH__REVOCATION__POLL_INTERVAL", "1s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        Settings::load(&crate::config::Sources { file: None, env }).unwrap()
    }

    fn accepted(keys: &Keys) -> Vec<String> {
        let mut kids: Vec<String> = keys.access.verifying.keys().cloned().collect();
        kids.sort();
        kids
    }

    #[test]
    fn a_retired_key_verifies_until_its_last_token_expired_then_drops_out() {
        const T: i64 = 1_800_000_000;
        for alg in ["EdDSA", "ES256", "HS256"] {
            let dir = tempfile::tempdir().unwrap();
            let s = rotation_settings(dir.path(), &[("AUTH__KEYS__ALGORITHM", alg)]);
            let first = Keys::load_at(&s, T - 100).unwrap().access.signing.kid;
            let r = rotate(&s, T).unwrap();
            let until = T + 2 + 60 + 5;
            assert_eq!(r.retired, Some((first.clone(), until)), "{alg}");
            assert_ne!(r.new_kid, first);
            assert!(r.dropped.is_empty());

            let keys = Keys::load_at(&s, T).unwrap();
            assert_eq!(keys.access.signing.kid, r.new_kid, "{alg}");
            let mut both = vec![first.clone(), r.new_kid.clone()];
            both.sort();
            assert_eq!(accepted(&keys), both);
            assert_eq!(accepted(&Keys::load_at(&s, until).unwrap()), both);
            assert_eq!(accepted(&Keys::reload_at(&s, until).unwrap()), both);
            let only_new = accepted(&Keys::load_at(&s, until + 1).unwrap());
            assert_eq!(only_new, std::slice::from_ref(&r.new_kid));

            let states = |now| {
                list(&s, now)
                    .unwrap()
                    .into_iter()
                    .map(|k| (k.kid, k.state))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                states(until),
                [
                    (r.new_kid.clone(), KeyState::Active),
                    (first.clone(), KeyState::Retired { until })
                ]
            );
            assert_eq!(
                states(until + 1),
                [
                    (r.new_kid.clone(), KeyState::Active),
                    (first.clone(), KeyState::Expired { since: until })
                ]
            );

            // The next rotation removes the expired file and keeps the one it retires.
            let again = rotate(&s, until + 1).unwrap();
            assert_eq!(again.dropped, std::slice::from_ref(&first));
            assert_eq!(again.retired.as_ref().map(|r| &r.0), Some(&r.new_kid));
            let files = std::fs::read_dir(dir.path().join("keys/retired"))
                .unwrap()
                .count();
            assert_eq!(files, 1, "{alg}: one retired file, no temporary ones");
            let mut kids = vec![again.new_kid.clone(), r.new_kid.clone()];
            kids.sort();
            assert_eq!(accepted(&Keys::load_at(&s, until + 1).unwrap()), kids);
        }
    }

    #[test]
    fn retired_files_hold_no_private_key_and_bad_ones_are_skipped() {
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let r = rotate(&s, T).unwrap();
        assert_eq!(r.retired, None, "no key before: just one generated");
        let r = rotate(&s, T).unwrap();
        let (old, _) = r.retired.unwrap();
        let retired = dir.path().join("keys/retired");
        let name = retired_key_name(SigningAlgorithm::EdDSA, T, &old);
        let text = std::fs::read_to_string(retired.join(&name)).unwrap();
        assert!(
            text.contains("PUBLIC KEY") && !text.contains("PRIVATE"),
            "{text}"
        );
        // A damaged file, and one whose name does not match its key: listed, never loaded.
        std::fs::write(
            retired.join(retired_key_name(SigningAlgorithm::EdDSA, T, "broken")),
            "garbage",
        )
        .unwrap();
        std::fs::copy(
            retired.join(&name),
            retired.join(retired_key_name(SigningAlgorithm::EdDSA, T, "other")),
        )
        .unwrap();
        let keys = Keys::load_at(&s, T).unwrap();
        let mut kids = vec![old.clone(), r.new_kid.clone()];
        kids.sort();
        assert_eq!(accepted(&keys), kids);
        let unreadable = list(&s, T)
            .unwrap()
            .into_iter()
            .filter(|k| matches!(k.state, KeyState::Unreadable(_)))
            .count();
        assert_eq!(unreadable, 2);
    }

    #[test]
    fn retired_key_names_round_trip() {
        for alg in SigningAlgorithm::ALL {
            let name = retired_key_name(alg, 1_800_000_000, "a-b_C9");
            assert_eq!(
                parse_retired_key_name(alg, &name),
                Some((1_800_000_000, "a-b_C9".to_string())),
                "{name}"
            );
        }
        let eddsa = SigningAlgorithm::EdDSA;
        for name in [
            "access-eddsa.pem",
            "access-eddsa.retired-1.kid.pem.tmp-abc",
            "access-eddsa.retired-x.kid.pem",
            "access-eddsa.retired-1..pem",
            "access-eddsa.retired-1.k.i.d.pem",
            "access-es256.retired-1.kid.pem",
        ] {
            assert_eq!(parse_retired_key_name(eddsa, name), None, "{name}");
        }
    }

    #[test]
    fn rotation_is_refused_when_the_key_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate(SigningAlgorithm::EdDSA).unwrap();
        let file = dir.path().join("mine.pem");
        std::fs::write(&file, key.expose_secret()).unwrap();
        for (setting, value) in [
            ("AUTH__KEYS__SIGNING_KEY", key.expose_secret().to_string()),
            ("AUTH__KEYS__SIGNING_KEY_FILE", file.display().to_string()),
            ("AUTH__KEYS__KID", "fixed".to_string()),
        ] {
            let s = rotation_settings(dir.path(), &[(setting, value.as_str())]);
            let e = rotate(&s, 1_800_000_000).err().unwrap().to_string();
            let name = setting.trim_start_matches("AUTH__").replace("__", ".");
            assert!(e.contains(&name.to_lowercase()), "{e}");
            assert!(!e.contains(key.expose_secret()), "no key material in {e}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "wrote nothing"
        );
    }

    #[test]
    fn a_running_server_swaps_keys_and_keeps_verifying_old_tokens() {
        use crate::security::tokens::{AccessGrant, Expiry, Tokens};
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let keys = Keys::load_at(&s, T).unwrap();
        let tokens = Tokens::new(keys, &s.tokens);
        let grant = || AccessGrant {
            user_id: crate::model::UserId::random(),
            username: "alice",
            roles: vec![],
            session_id: crate::model::SessionId::random(),
        };
        let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        let old = tokens.issue_access(grant(), T).unwrap();

        let r = rotate(&s, T).unwrap();
        assert!(tokens.replace_access_keys(Keys::reload_at(&s, T).unwrap().access));
        assert!(
            !tokens.replace_access_keys(Keys::reload_at(&s, T).unwrap().access),
            "no change"
        );
        let new = tokens.issue_access(grant(), T).unwrap();
        assert_eq!(kid_of(&new), r.new_kid);
        assert_ne!(kid_of(&old), r.new_kid);
        for t in [&old, &new] {
            assert!(tokens.check_access(t, Expiry::Enforce, T).is_ok());
        }
        let published: Vec<_> = tokens
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        assert_eq!(published.len(), 2);

        // Once the old key's time has passed, a reload drops it.
        let later = r.retired.unwrap().1 + 1;
        assert!(tokens.replace_access_keys(Keys::reload_at(&s, later).unwrap().access));
        assert_eq!(tokens.jwks().keys.len(), 1);
        assert!(matches!(
            tokens.check_access(&old, Expiry::Ignore, later),
            Err(crate::security::tokens::TokenError::Invalid(_))
        ));
    }

    #[test]
    fn a_key_file_replaced_under_a_fixed_kid_is_a_change() {
        use crate::security::tokens::{AccessGrant, Expiry, Tokens};
        use secrecy::ExposeSecret;
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("access.pem");
        let write = || {
            let pem = generate(SigningAlgorithm::EdDSA).unwrap();
            std::fs::write(&file, pem.expose_secret()).unwrap();
        };
        write();
        let path = file.display().to_string();
        let s = rotation_settings(
            dir.path(),
            &[
                ("AUTH__KEYS__SIGNING_KEY_FILE", &path),
                ("AUTH__KEYS__KID", "fixed"),
            ],
        );
        let keys = Keys::load_at(&s, T).unwrap();
        let tokens = Tokens::new(keys, &s.tokens);
        let old = tokens
            .issue_access(
                AccessGrant {
                    user_id: crate::model::UserId::random(),
                    username: "alice",
                    roles: vec![],
                    session_id: crate::model::SessionId::random(),
                },
                T,
            )
            .unwrap();
        assert!(
            !tokens.replace_access_keys(Keys::reload_at(&s, T).unwrap().access),
            "same file"
        );
        write();
        assert!(
            tokens.replace_access_keys(Keys::reload_at(&s, T).unwrap().access),
            "same kid, other key"
        );
        assert!(tokens.check_access(&old, Expiry::Enforce, T).is_err());
    }
}
