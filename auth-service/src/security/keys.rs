//! Signing and verification keys: loaded from configuration, or generated on first start and
//! kept in the data directory (mode 0600) so that a restart keeps every session valid.
//!
//! A generated access-token key is rotated in two steps (`auth-service keys rotate`,
//! [`rotate`]), so that a new key is published and accepted everywhere before anyone signs
//! with it. The new key is first written beside the active one as a *pending* key, under a
//! name that records when it starts signing ([`publish_lead_secs`] later). Until then loading
//! makes it a verifying key only; from then on loading makes it the signing key, and the key
//! it replaces a retired one, retired at that time. Running servers re-read the directory
//! every `revocation.poll_interval` with their own clock, so every replica switches by itself
//! at about that time. The next rotation tidies up: the replaced key's public half (an HS256
//! key's secret) goes to `retired/` under a name that records its retirement time, and the
//! pending key becomes the active file. Loading accepts a retired key until every token it
//! can have signed has expired ([`retired_until`]).
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
        let (access, _) = access_keys(settings, now, &missing)?;

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

/// A function that reads (or makes) the generated access-token key's material when no key
/// is configured: see [`Keys::load_with`].
type Missing<'a> =
    dyn Fn(&str, &Path, SigningAlgorithm) -> Result<SecretString, SettingsError> + 'a;

/// A key of `keys.dir` other than the signing one: its `kid`, where it stands, and its
/// verifying half when readable.
type OtherKey = (String, KeyState, Option<VerifyingKey>);

/// Adds `entry` to `others`, once per `kid`. The same key can be found more than once (a
/// pending key whose time has come and its copy being committed, or a key retired twice
/// when a rotation was run again after failing half-way): the entry that keeps it accepted
/// longest wins, so an expired or damaged copy never hides a good one. Damaged files are
/// all listed, and never loaded.
fn place(others: &mut Vec<OtherKey>, entry: OtherKey) {
    if matches!(entry.1, KeyState::Unreadable(_)) {
        others.push(entry);
        return;
    }
    let same = others
        .iter_mut()
        .find(|(kid, state, _)| *kid == entry.0 && !matches!(state, KeyState::Unreadable(_)));
    match same {
        Some(seen) if standing(&entry.1) > standing(&seen.1) => *seen = entry,
        Some(_) => {}
        None => others.push(entry),
    }
}

/// How long a state keeps a key accepted, to compare two findings of one key.
fn standing(state: &KeyState) -> (u8, i64) {
    match state {
        KeyState::Unreadable(_) => (0, 0),
        KeyState::Expired { since } => (1, *since),
        KeyState::Retired { until } => (2, *until),
        KeyState::Pending { .. } => (3, 0),
        KeyState::Active | KeyState::Configured => (4, 0),
    }
}

/// The access-token keys at `now`, and every one of them listed with where it stands, in
/// `keys list` order: the signing key, the configured verification keys, then the pending
/// and retired keys of `keys.dir`.
fn access_keys(
    settings: &Settings,
    now: i64,
    missing: &Missing<'_>,
) -> Result<(KeySet, Vec<KeyListing>), SettingsError> {
    let k = &settings.keys;
    let (alg, dir) = (k.algorithm, settings.keys_dir());
    // Pending keys first, then the active file, then retired keys: a commit (see `commit`)
    // retires the replaced key, then copies the pending key over the active file, then
    // removes the pending file, so reading in this order never misses the signing key or the
    // key it replaced, however the directory changes in between.
    let pending = if rotation_refused(settings).is_none() {
        pending_keys(&dir, alg)
    } else {
        Vec::new()
    };
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
                &generated_access_key_path(&dir, alg),
                alg,
            )?,
        ),
    };
    let (encoding, verifying, public) = parse_private(setting, alg, &material)?;
    let kid = k.kid.clone().unwrap_or_else(|| derive_kid(alg, &public));
    let mut signing = (kid, encoding, verifying);
    // Every key but the signing one: where it stands, and its verifying half if readable.
    let mut others: Vec<OtherKey> = Vec::new();
    let retired_state = |retired_at| {
        let until = retired_until(settings, retired_at);
        if now > until {
            KeyState::Expired { since: until }
        } else {
            KeyState::Retired { until }
        }
    };
    for next in pending {
        match next.key {
            Err(e) => place(&mut others, (next.kid, KeyState::Unreadable(e.0), None)),
            // Being committed: the active file holds it already.
            Ok(_) if next.kid == signing.0 => {}
            // Its time has come: it signs, and the key it replaces is retired since then.
            Ok(key) if next.activates_at <= now => {
                let (kid, _, verifying) =
                    std::mem::replace(&mut signing, (next.kid, key.encoding, key.verifying));
                place(
                    &mut others,
                    (kid, retired_state(next.activates_at), Some(verifying)),
                );
            }
            Ok(key) => place(
                &mut others,
                (
                    next.kid,
                    KeyState::Pending {
                        from: next.activates_at,
                    },
                    Some(key.verifying),
                ),
            ),
        }
    }
    if generated_access_key(settings) {
        for retired in retired_keys(&dir, alg) {
            if retired.kid == signing.0 {
                continue;
            }
            place(
                &mut others,
                match retired.key {
                    Ok(key) => (retired.kid, retired_state(retired.retired_at), Some(key)),
                    Err(e) => (retired.kid, KeyState::Unreadable(e.0), None),
                },
            );
        }
    }
    let (signing_kid, signing_key, signing_verifying) = signing;
    let mut verifying = HashMap::from([(signing_kid.clone(), signing_verifying)]);
    let mut listing = vec![KeyListing {
        kid: signing_kid.clone(),
        algorithm: alg,
        state: KeyState::Active,
    }];
    let mut in_dir = Vec::new();
    for (kid, state, key) in others {
        match (&state, key) {
            (KeyState::Pending { .. } | KeyState::Retired { .. }, Some(key)) => {
                verifying.insert(kid.clone(), key);
            }
            // One damaged file must not stop the service or hide the signing key.
            (KeyState::Unreadable(why), _) => {
                log::warn!("ignoring an access-token key in keys.dir: {why}")
            }
            _ => {}
        }
        in_dir.push(KeyListing {
            kid,
            algorithm: alg,
            state,
        });
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
        if extra.kid.is_empty() || verifying.contains_key(&extra.kid) {
            return Err(SettingsError(format!(
                "{setting}.kid: must be non-empty and unique (\"{}\")",
                extra.kid
            )));
        }
        let key = parse_public(&setting, extra.algorithm, &material)?;
        verifying.insert(extra.kid.clone(), key);
        listing.push(KeyListing {
            kid: extra.kid.clone(),
            algorithm: extra.algorithm,
            state: KeyState::Configured,
        });
    }
    listing.extend(in_dir);
    let set = KeySet {
        signing: SigningKey {
            kid: signing_kid,
            algorithm: jwt_algorithm(alg),
            key: signing_key,
        },
        verifying,
    };
    Ok((set, listing))
}

/// Whether the access-token key is the generated one in `keys.dir` (so `keys rotate` may
/// replace it), rather than one given by configuration.
fn generated_access_key(settings: &Settings) -> bool {
    settings.keys.signing_key.is_none() && settings.keys.signing_key_file.is_none()
}

/// How long after its retirement a key may still have signed a token: a replica goes on
/// signing with it until it next reads `keys.dir`, which it does every
/// `revocation.poll_interval`; twice that, rounded up to whole seconds, bounds it (and
/// leaves room for replicas' clocks to differ by up to one interval).
pub fn reload_grace_secs(settings: &Settings) -> i64 {
    let poll = settings.revocation.poll_interval.get();
    i64::try_from(poll.as_millis().saturating_mul(2).div_ceil(1000)).unwrap_or(i64::MAX)
}

/// How long a verifier may cache `/.well-known/jwks.json`: its `Cache-Control: max-age`
/// (`http/wellknown.rs` sends this value; an API test reads it back from the header).
pub const JWKS_MAX_AGE_SECS: i64 = 300;

/// How long `keys rotate` publishes a new key before it signs: every replica re-reads
/// `keys.dir` within [`reload_grace_secs`], and a key set a verifier fetched from a replica
/// just before that re-read stays cached for up to [`JWKS_MAX_AGE_SECS`]. After both, every
/// replica and every cached key set knows the new key. (Many JWKS clients fetch the set
/// again when they meet an unknown `kid`, but not all do, and some only after a cool-down,
/// so the wait does not rely on it.)
pub fn publish_lead_secs(settings: &Settings) -> i64 {
    reload_grace_secs(settings).saturating_add(JWKS_MAX_AGE_SECS)
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

/// A key `keys rotate` published ahead of the time it signs from, as found in `keys.dir`.
struct PendingKey {
    path: PathBuf,
    kid: String,
    activates_at: i64,
    key: Result<PendingMaterial, SettingsError>,
}

struct PendingMaterial {
    material: SecretString,
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

fn retired_dir(dir: &Path) -> PathBuf {
    dir.join("retired")
}

/// `access-eddsa.<label>-<unix time>.<kid>.pem` (the extension as the active file's).
fn key_file_name(alg: SigningAlgorithm, label: &str, at: i64, kid: &str) -> String {
    let active = generated_access_key_path(Path::new(""), alg);
    let active = active.to_string_lossy();
    let (stem, ext) = active.split_once('.').unwrap_or((&active, ""));
    format!("{stem}.{label}-{at}.{kid}.{ext}")
}

/// The time and `kid` a [`key_file_name`] with `label` records, for `alg`'s files.
fn parse_key_file_name(alg: SigningAlgorithm, label: &str, name: &str) -> Option<(i64, String)> {
    let active = generated_access_key_path(Path::new(""), alg);
    let active = active.to_string_lossy();
    let (stem, ext) = active.split_once('.')?;
    let rest = name
        .strip_prefix(stem)?
        .strip_prefix('.')?
        .strip_prefix(label)?
        .strip_prefix('-')?
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

/// A retired key's file: `access-eddsa.retired-<unix time>.<kid>.pem` in `retired/`.
fn retired_key_name(alg: SigningAlgorithm, retired_at: i64, kid: &str) -> String {
    key_file_name(alg, "retired", retired_at, kid)
}

fn parse_retired_key_name(alg: SigningAlgorithm, name: &str) -> Option<(i64, String)> {
    parse_key_file_name(alg, "retired", name)
}

/// A pending key's file, beside the active one: `access-eddsa.next-<unix time>.<kid>.pem`,
/// named after the time it signs from.
fn pending_key_name(alg: SigningAlgorithm, activates_at: i64, kid: &str) -> String {
    key_file_name(alg, "next", activates_at, kid)
}

fn parse_pending_key_name(alg: SigningAlgorithm, name: &str) -> Option<(i64, String)> {
    parse_key_file_name(alg, "next", name)
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

/// Every pending key of `alg` in `dir`, earliest first. A file that is gone by the time it
/// is read (committed or retired meanwhile) is left out.
fn pending_keys(dir: &Path, alg: SigningAlgorithm) -> Vec<PendingKey> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut keys: Vec<PendingKey> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let (activates_at, named_kid) = parse_pending_key_name(alg, name.to_str()?)?;
            let path = entry.path();
            let setting = format!("keys.dir: {}", path.display());
            let material = match crate::config::read_secret_file(&setting, &path) {
                Err(_) if !path.exists() => return None,
                read => read,
            };
            let key = material.and_then(|material| {
                let (encoding, verifying, public) = parse_private(&setting, alg, &material)?;
                let kid = derive_kid(alg, &public);
                if kid != named_kid {
                    return Err(SettingsError(format!(
                        "{setting}: holds the key {kid}, not {named_kid}"
                    )));
                }
                Ok(PendingMaterial {
                    material,
                    encoding,
                    verifying,
                })
            });
            Some(PendingKey {
                path,
                kid: named_kid,
                activates_at,
                key,
            })
        })
        .collect();
    keys.sort_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)));
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

fn io_error(what: &str, path: &Path, e: std::io::Error) -> SettingsError {
    SettingsError(format!(
        "keys rotate: cannot {what} {}: {e}",
        path.display()
    ))
}

/// Writes key material (or a public key) to `path` with [`replace_private`], and a newline.
fn write_key(path: &Path, text: &str) -> Result<(), SettingsError> {
    let mut contents = format!("{text}\n").into_bytes();
    let written = replace_private(path, &contents);
    contents.fill(0);
    written.map_err(|e| io_error("write", path, e))
}

/// The `kid` of the generated key `material`.
fn kid_of(alg: SigningAlgorithm, material: &SecretString) -> Result<String, SettingsError> {
    let (_, _, public) = parse_private("keys.signing_key", alg, material)?;
    Ok(derive_kid(alg, &public))
}

/// Keeps the public half of the key `material` (an HS256 key's secret) under `retired/`,
/// named after `retired_at` and its `kid`.
fn retire(
    dir: &Path,
    alg: SigningAlgorithm,
    material: &SecretString,
    kid: &str,
    retired_at: i64,
) -> Result<(), SettingsError> {
    let kept = match alg {
        SigningAlgorithm::HS256 => SecretString::from(material.expose_secret().to_string()),
        _ => SecretString::from(public_pem(alg, material)?),
    };
    let retired_dir = retired_dir(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&retired_dir)
        .map_err(|e| io_error("create", &retired_dir, e))?;
    let path = retired_dir.join(retired_key_name(alg, retired_at, kid));
    write_key(&path, kept.expose_secret())
}

/// Makes a pending key whose time has come the active file's key, in three steps that each
/// leave a directory loading to the same keys (see `access_keys`): the key it replaces goes
/// to `retired/`, retired at the pending key's time (unless every token it signed has
/// expired already); then the pending key is copied over the active file; then its own file
/// is removed.
fn commit(
    settings: &Settings,
    next: &PendingKey,
    material: &SecretString,
    now: i64,
) -> Result<(), SettingsError> {
    commit_steps(settings, next, material, now, &mut |_| {})
}

/// [`commit`], calling `after` with each step's name once it is done (so a test can load
/// the directory between the real steps, in their real order).
fn commit_steps(
    settings: &Settings,
    next: &PendingKey,
    material: &SecretString,
    now: i64,
    after: &mut dyn FnMut(&str),
) -> Result<(), SettingsError> {
    let alg = settings.keys.algorithm;
    let dir = settings.keys_dir();
    let active = generated_access_key_path(&dir, alg);
    let current = crate::config::read_secret_file("keys.signing_key", &active)?;
    let current_kid = kid_of(alg, &current)?;
    if current_kid != next.kid {
        if now <= retired_until(settings, next.activates_at) {
            retire(&dir, alg, &current, &current_kid, next.activates_at)?;
            after("the replaced key retired");
        }
        write_key(&active, material.expose_secret())?;
        after("the pending key copied over the active file");
    }
    std::fs::remove_file(&next.path).map_err(|e| io_error("remove", &next.path, e))?;
    after("the pending file removed");
    Ok(())
}

/// The lock file `keys rotate` holds in `keys.dir` while it works. Servers never take it:
/// they only read the key files, each of which is complete at every moment.
const ROTATION_LOCK: &str = "rotate.lock";

/// Takes the rotation lock (an advisory `flock` on [`ROTATION_LOCK`], released when the
/// returned file is dropped, or by the kernel if the process dies), or refuses at once: two
/// rotations at the same time (two operators, or a retry while the first one still runs)
/// would each commit, retire and remove files the other one is moving.
fn lock_rotation(dir: &Path) -> Result<std::fs::File, SettingsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("create", dir, e))?;
    let path = dir.join(ROTATION_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SettingsError(format!(
            "keys rotate: another `keys rotate` is running on {} (it holds {}); \
             run this one again once it has finished",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", &path, e)),
    }
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

/// When [`rotate`] makes the new key sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// [`publish_lead_secs`] from now: published and accepted everywhere first.
    Scheduled,
    /// At once (`keys rotate --now`): for up to one `revocation.poll_interval`, a replica
    /// that has not re-read `keys.dir` yet refuses the new key's tokens, and a verifier with
    /// a cached key set meets an unknown `kid`.
    Now,
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub algorithm: SigningAlgorithm,
    pub new_kid: String,
    /// When the new key signs from (Unix seconds): now, with [`Activation::Now`] or when
    /// there was no key yet; else [`publish_lead_secs`] later, and it is published meanwhile.
    pub signs_from: i64,
    /// The key the new one replaces at `signs_from`, and until when that one stays accepted;
    /// `None` when there was no key yet (one has just been generated).
    pub retired: Option<(String, i64)>,
    /// Pending keys whose time had come, made the active file's key first (oldest first).
    pub committed: Vec<String>,
    /// Pending keys that [`Activation::Now`] retired before their time, instead of signing.
    pub discarded: Vec<String>,
    /// Retired keys whose time had passed, removed from `keys.dir`.
    pub dropped: Vec<String>,
}

/// Rotates the generated access-token key in `keys.dir`. A pending key whose time has come
/// is committed first (see `commit`). Then a new key is written (whole, then renamed into
/// place, so a server reading the directory at any moment finds a complete, consistent set):
/// as a pending key that signs from [`publish_lead_secs`] later ([`Activation::Scheduled`];
/// refused while another rotation is pending), or over the active file, after the old key's
/// public half is kept under `retired/` and before any pending key is retired in its turn
/// instead of signing ([`Activation::Now`]). Retired keys past their time are removed.
pub fn rotate(
    settings: &Settings,
    now: i64,
    activation: Activation,
) -> Result<Rotation, SettingsError> {
    if let Some(why) = rotation_refused(settings) {
        return Err(SettingsError(format!("keys rotate: {why}")));
    }
    let alg = settings.keys.algorithm;
    let dir = settings.keys_dir();
    let _lock = lock_rotation(&dir)?;
    let active = generated_access_key_path(&dir, alg);
    if !active.exists() {
        // Nothing to retire: the key a first start would generate (another instance may win
        // the race and generate it; then that one is the active key).
        let material = load_or_generate("keys.signing_key", &active, alg)?;
        return Ok(Rotation {
            algorithm: alg,
            new_kid: kid_of(alg, &material)?,
            signs_from: now,
            retired: None,
            committed: Vec::new(),
            discarded: Vec::new(),
            dropped: Vec::new(),
        });
    }
    let mut due = Vec::new();
    let mut waiting = Vec::new();
    for next in pending_keys(&dir, alg) {
        let material = match &next.key {
            Ok(key) => key.material.clone(),
            Err(e) => {
                return Err(SettingsError(format!(
                    "keys rotate: {}; that key never signed: remove the file and run again",
                    e.0
                )));
            }
        };
        if next.activates_at <= now {
            due.push((next, material));
        } else {
            waiting.push(next);
        }
    }
    if let (Activation::Scheduled, Some(next)) = (activation, waiting.first()) {
        return Err(SettingsError(format!(
            "keys rotate: a rotation is pending already: kid={} signs from {} (in {}). \
             Run `keys rotate` again after that, or `keys rotate --now` to retire it and make \
             a new key sign at once",
            next.kid,
            rfc3339(next.activates_at),
            humantime::format_duration(std::time::Duration::from_secs(
                next.activates_at.abs_diff(now)
            ))
        )));
    }
    let mut committed = Vec::new();
    for (next, material) in due {
        commit(settings, &next, &material, now)?;
        committed.push(next.kid);
    }
    let old = crate::config::read_secret_file("keys.signing_key", &active)?;
    let old_kid = kid_of(alg, &old)?;
    let material = generate(alg)?;
    let new_kid = kid_of(alg, &material)?;
    let mut discarded = Vec::new();
    let signs_from = match activation {
        Activation::Now => {
            retire(&dir, alg, &old, &old_kid, now)?;
            write_key(&active, material.expose_secret())?;
            for next in waiting {
                // It should not have signed yet; but a replica whose clock runs ahead of
                // this one's may have begun. Kept as retired, so such tokens stay good.
                if let Ok(key) = &next.key {
                    retire(&dir, alg, &key.material, &next.kid, now)?;
                }
                std::fs::remove_file(&next.path).map_err(|e| io_error("remove", &next.path, e))?;
                discarded.push(next.kid);
            }
            now
        }
        Activation::Scheduled => {
            let at = now.saturating_add(publish_lead_secs(settings));
            write_key(
                &dir.join(pending_key_name(alg, at, &new_kid)),
                material.expose_secret(),
            )?;
            at
        }
    };
    let mut dropped = Vec::new();
    for old in retired_keys(&dir, alg) {
        if now > retired_until(settings, old.retired_at) {
            std::fs::remove_file(&old.path).map_err(|e| io_error("remove", &old.path, e))?;
            dropped.push(old.kid);
        }
    }
    Ok(Rotation {
        algorithm: alg,
        new_kid,
        signs_from,
        retired: Some((old_kid, retired_until(settings, signs_from))),
        committed,
        discarded,
        dropped,
    })
}

/// Unix seconds as RFC 3339 (UTC), for messages.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Where an access-token key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Published by `keys rotate`, verifying tokens already; signs from this time (Unix
    /// seconds) on.
    Pending { from: i64 },
    /// Verifies tokens until this time (Unix seconds), then is dropped.
    Retired { until: i64 },
    /// Retired, and past its time: no longer loaded (the next rotation removes its file).
    Expired { since: i64 },
    /// Listed under `keys.verification_keys`: accepted while configured.
    Configured,
    /// A file in `keys.dir` that cannot be read as a key (never loaded).
    Unreadable(String),
}

/// One line of `keys list`: never any key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
}

/// The access-token keys and where each stands at `now`: the one signing, those configured
/// as verification keys, and (for a generated key) every pending and retired one still on
/// disk. Reads only; a key not generated yet is reported as an error.
pub fn list(settings: &Settings, now: i64) -> Result<Vec<KeyListing>, SettingsError> {
    let (_, listing) = access_keys(settings, now, &|setting, path, _| {
        if path.exists() {
            crate::config::read_secret_file(setting, path)
        } else {
            Err(SettingsError(format!(
                "{setting}: no key at {} yet (the server generates one when it first \
                 starts; `keys rotate` makes one too)",
                path.display()
            )))
        }
    })?;
    Ok(listing)
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

    /// `keys rotate --now`: the new key signs at once, as rotations did before they were
    /// published first.
    #[test]
    fn a_retired_key_verifies_until_its_last_token_expired_then_drops_out() {
        const T: i64 = 1_800_000_000;
        for alg in ["EdDSA", "ES256", "HS256"] {
            let dir = tempfile::tempdir().unwrap();
            let s = rotation_settings(dir.path(), &[("AUTH__KEYS__ALGORITHM", alg)]);
            let first = Keys::load_at(&s, T - 100).unwrap().access.signing.kid;
            let r = rotate(&s, T, Activation::Now).unwrap();
            let until = T + 2 + 60 + 5;
            assert_eq!(r.retired, Some((first.clone(), until)), "{alg}");
            assert_eq!(r.signs_from, T);
            assert_ne!(r.new_kid, first);
            assert!(r.dropped.is_empty() && r.committed.is_empty() && r.discarded.is_empty());

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
            let again = rotate(&s, until + 1, Activation::Now).unwrap();
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
        let r = rotate(&s, T, Activation::Scheduled).unwrap();
        assert_eq!(r.retired, None, "no key before: just one generated");
        assert_eq!(r.signs_from, T, "and it signs at once");
        let r = rotate(&s, T, Activation::Now).unwrap();
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
    fn retired_and_pending_key_names_round_trip() {
        for alg in SigningAlgorithm::ALL {
            let name = retired_key_name(alg, 1_800_000_000, "a-b_C9");
            assert_eq!(
                parse_retired_key_name(alg, &name),
                Some((1_800_000_000, "a-b_C9".to_string())),
                "{name}"
            );
            assert_eq!(parse_pending_key_name(alg, &name), None, "{name}");
            let name = pending_key_name(alg, 1_800_000_302, "a-b_C9");
            assert_eq!(
                parse_pending_key_name(alg, &name),
                Some((1_800_000_302, "a-b_C9".to_string())),
                "{name}"
            );
            assert_eq!(parse_retired_key_name(alg, &name), None, "{name}");
        }
        let eddsa = SigningAlgorithm::EdDSA;
        for name in [
            "access-eddsa.pem",
            "access-eddsa.retired-1.kid.pem.tmp-abc",
            "access-eddsa.retired-1.kid.tmp-abc",
            "access-eddsa.retired-x.kid.pem",
            "access-eddsa.retired-1..pem",
            "access-eddsa.retired-1.k.i.d.pem",
            "access-es256.retired-1.kid.pem",
        ] {
            assert_eq!(parse_retired_key_name(eddsa, name), None, "{name}");
        }
        for name in [
            "access-eddsa.next-1.kid.tmp-abc",
            "access-eddsa.next-.kid.pem",
            "access-eddsa.nextx-1.kid.pem",
            "access-es256.next-1.kid.pem",
            "refresh-hs256.secret",
        ] {
            assert_eq!(parse_pending_key_name(eddsa, name), None, "{name}");
        }
    }

    /// What `keys list` says of each key at `now`.
    fn states(s: &Settings, now: i64) -> Vec<(String, KeyState)> {
        list(s, now)
            .unwrap()
            .into_iter()
            .map(|k| (k.kid, k.state))
            .collect()
    }

    fn sorted(kids: &[&String]) -> Vec<String> {
        let mut kids: Vec<String> = kids.iter().map(|k| k.to_string()).collect();
        kids.sort();
        kids
    }

    fn pending_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".next-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pending_key_verifies_before_its_time_and_signs_from_then() {
        use std::os::unix::fs::PermissionsExt;
        const T: i64 = 1_800_000_000;
        for alg in ["EdDSA", "ES256", "HS256"] {
            let dir = tempfile::tempdir().unwrap();
            let s = rotation_settings(dir.path(), &[("AUTH__KEYS__ALGORITHM", alg)]);
            let first = Keys::load_at(&s, T - 100).unwrap().access.signing.kid;
            let r = rotate(&s, T, Activation::Scheduled).unwrap();
            // Twice the reload interval (1 s), plus the JWKS max-age.
            let at = T + 2 + 300;
            assert_eq!(publish_lead_secs(&s), 2 + 300);
            assert_eq!(r.signs_from, at, "{alg}");
            let until = at + 2 + 60 + 5;
            assert_eq!(r.retired, Some((first.clone(), until)), "{alg}");
            assert_ne!(r.new_kid, first);
            assert!(r.committed.is_empty() && r.discarded.is_empty() && r.dropped.is_empty());

            // On disk: the active file untouched, the new key beside it (private), nothing
            // retired yet.
            let file =
                dir.path()
                    .join("keys")
                    .join(pending_key_name(s.keys.algorithm, at, &r.new_kid));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{alg}");
            assert!(!dir.path().join("keys/retired").exists(), "{alg}");

            let both = sorted(&[&first, &r.new_kid]);
            for now in [T, at - 1] {
                let keys = Keys::reload_at(&s, now).unwrap();
                assert_eq!(keys.access.signing.kid, first, "{alg}: not its time yet");
                assert_eq!(accepted(&keys), both, "{alg}: but accepted already");
            }
            if alg != "HS256" {
                let published: Vec<_> = Keys::reload_at(&s, T)
                    .unwrap()
                    .access
                    .jwks()
                    .keys
                    .into_iter()
                    .filter_map(|k| k.common.key_id)
                    .collect();
                assert_eq!(published, both, "{alg}: published before it signs");
            }
            for now in [at, until] {
                let keys = Keys::reload_at(&s, now).unwrap();
                assert_eq!(
                    keys.access.signing.kid, r.new_kid,
                    "{alg}: its time has come"
                );
                assert_eq!(accepted(&keys), both, "{alg}: the old key retired at {at}");
            }
            let keys = Keys::reload_at(&s, until + 1).unwrap();
            assert_eq!(accepted(&keys), std::slice::from_ref(&r.new_kid), "{alg}");

            assert_eq!(
                states(&s, T),
                [
                    (first.clone(), KeyState::Active),
                    (r.new_kid.clone(), KeyState::Pending { from: at })
                ]
            );
            assert_eq!(
                states(&s, at),
                [
                    (r.new_kid.clone(), KeyState::Active),
                    (first.clone(), KeyState::Retired { until })
                ]
            );
            assert_eq!(
                states(&s, until + 1),
                [
                    (r.new_kid.clone(), KeyState::Active),
                    (first.clone(), KeyState::Expired { since: until })
                ]
            );
        }
    }

    #[test]
    fn a_rotation_waits_for_the_pending_one_then_completes_it() {
        const T: i64 = 1_800_000_000;
        for alg in ["EdDSA", "HS256"] {
            let dir = tempfile::tempdir().unwrap();
            let s = rotation_settings(dir.path(), &[("AUTH__KEYS__ALGORITHM", alg)]);
            let first = Keys::load_at(&s, T).unwrap().access.signing.kid;
            let r = rotate(&s, T, Activation::Scheduled).unwrap();
            let at = r.signs_from;

            // Not while it is pending: refused, naming it and its time, changing nothing.
            let before = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
            let e = rotate(&s, at - 1, Activation::Scheduled)
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains("pending") && e.contains(&r.new_kid) && e.contains(&rfc3339(at)),
                "{e}"
            );
            assert!(e.contains("--now"), "{e}");
            let after = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
            assert_eq!(before, after, "{alg}: wrote nothing");

            // Once its time has come, the next rotation completes it first: the active file
            // holds it, the old key is kept in retired/ as retired at `at`.
            let later = at + 10;
            let again = rotate(&s, later, Activation::Scheduled).unwrap();
            assert_eq!(again.committed, std::slice::from_ref(&r.new_kid), "{alg}");
            assert_eq!(
                again.retired,
                Some((r.new_kid.clone(), retired_until(&s, later + 302)))
            );
            let active = crate::config::read_secret_file(
                "k",
                &generated_access_key_path(&dir.path().join("keys"), s.keys.algorithm),
            )
            .unwrap();
            assert_eq!(kid_of(s.keys.algorithm, &active).unwrap(), r.new_kid);
            let retired = std::fs::read_dir(dir.path().join("keys/retired"))
                .unwrap()
                .map(|e| e.unwrap())
                .collect::<Vec<_>>();
            assert_eq!(retired.len(), 1, "{alg}");
            assert_eq!(
                retired[0].file_name().to_string_lossy(),
                retired_key_name(s.keys.algorithm, at, &first)
            );
            let text = std::fs::read_to_string(retired[0].path()).unwrap();
            assert!(!text.contains("PRIVATE"), "{alg}: {text}");
            assert_eq!(
                pending_files(dir.path()),
                [pending_key_name(
                    s.keys.algorithm,
                    later + 302,
                    &again.new_kid
                )]
            );
            // The same keys as before the files moved, and the third one pending.
            let keys = Keys::reload_at(&s, later).unwrap();
            assert_eq!(keys.access.signing.kid, r.new_kid);
            assert_eq!(
                accepted(&keys),
                sorted(&[&first, &r.new_kid, &again.new_kid])
            );
            assert_eq!(
                states(&s, later),
                [
                    (r.new_kid.clone(), KeyState::Active),
                    (
                        again.new_kid.clone(),
                        KeyState::Pending { from: later + 302 }
                    ),
                    (
                        first.clone(),
                        KeyState::Retired {
                            until: retired_until(&s, at)
                        }
                    ),
                ]
            );
        }
    }

    #[test]
    fn completing_a_rotation_long_after_its_time_keeps_no_expired_key() {
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        Keys::load_at(&s, T).unwrap();
        let r = rotate(&s, T, Activation::Scheduled).unwrap();
        let long_after = retired_until(&s, r.signs_from) + 1;
        let again = rotate(&s, long_after, Activation::Now).unwrap();
        assert_eq!(again.committed, std::slice::from_ref(&r.new_kid));
        assert_eq!(again.retired.as_ref().map(|r| &r.0), Some(&r.new_kid));
        // Only the key just retired is kept; the first one's tokens have all expired.
        let retired = std::fs::read_dir(dir.path().join("keys/retired"))
            .unwrap()
            .count();
        assert_eq!(retired, 1);
        assert!(pending_files(dir.path()).is_empty());
        assert_eq!(
            accepted(&Keys::reload_at(&s, long_after).unwrap()),
            sorted(&[&r.new_kid, &again.new_kid])
        );
    }

    #[test]
    fn every_step_of_completing_a_rotation_loads_the_same_keys() {
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let alg = s.keys.algorithm;
        let keys_dir = dir.path().join("keys");
        let first = Keys::load_at(&s, T).unwrap().access.signing.kid;
        let r = rotate(&s, T, Activation::Scheduled).unwrap();
        let now = r.signs_from + 5;
        let expect = (r.new_kid.clone(), sorted(&[&first, &r.new_kid]));
        let loaded = || {
            let keys = Keys::reload_at(&s, now).unwrap();
            (keys.access.signing.kid.clone(), accepted(&keys))
        };
        assert_eq!(loaded(), expect, "before");
        // `commit` itself, with the directory loaded after each of its steps, in their order.
        let next = pending_keys(&keys_dir, alg).remove(0);
        let material = next.key.as_ref().map(|k| k.material.clone()).unwrap();
        let mut steps = Vec::new();
        commit_steps(&s, &next, &material, now, &mut |step| {
            assert_eq!(loaded(), expect, "after {step}");
            steps.push(step.to_string());
        })
        .unwrap();
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert!(pending_files(dir.path()).is_empty());
        let listed = states(&s, now);
        assert_eq!(listed.len(), 2, "{listed:?}");
    }

    #[test]
    fn rotate_now_retires_a_pending_key_instead_of_letting_it_sign() {
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let first = Keys::load_at(&s, T).unwrap().access.signing.kid;
        let pending = rotate(&s, T, Activation::Scheduled).unwrap();
        let r = rotate(&s, T + 1, Activation::Now).unwrap();
        assert_eq!(r.signs_from, T + 1);
        assert_eq!(r.discarded, std::slice::from_ref(&pending.new_kid));
        assert_eq!(r.retired, Some((first.clone(), retired_until(&s, T + 1))));
        assert!(pending_files(dir.path()).is_empty());
        let keys = Keys::reload_at(&s, T + 1).unwrap();
        assert_eq!(keys.access.signing.kid, r.new_kid);
        // A replica whose clock ran ahead may have signed with the pending key already: it
        // stays accepted, as a retired key, for the same window as the key it was to replace.
        assert_eq!(
            accepted(&keys),
            sorted(&[&first, &pending.new_kid, &r.new_kid])
        );
        let until = retired_until(&s, T + 1);
        assert_eq!(
            accepted(&Keys::reload_at(&s, until + 1).unwrap()),
            std::slice::from_ref(&r.new_kid)
        );
        // Nor does it come back at the time it would have signed from.
        let keys = Keys::reload_at(&s, pending.signs_from).unwrap();
        assert_eq!(keys.access.signing.kid, r.new_kid);
    }

    #[test]
    fn a_second_rotation_at_the_same_time_is_refused_and_changes_nothing() {
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let first = Keys::load_at(&s, T).unwrap().access.signing.kid;
        let keys_dir = dir.path().join("keys");
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(&keys_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // Another `keys rotate` holds the lock: its own open file description, as another
        // process would have.
        let running = lock_rotation(&keys_dir).unwrap();
        let before = listing();
        for activation in [Activation::Scheduled, Activation::Now] {
            let err = rotate(&s, T, activation).unwrap_err().0;
            assert!(err.contains("another `keys rotate` is running"), "{err}");
        }
        assert_eq!(listing(), before);
        assert_eq!(Keys::reload_at(&s, T).unwrap().access.signing.kid, first);
        // Once it is done the lock is free again, and stays free after each rotation.
        drop(running);
        let r = rotate(&s, T, Activation::Now).unwrap();
        assert_ne!(r.new_kid, first);
        rotate(&s, T + 1, Activation::Scheduled).unwrap();
        drop(lock_rotation(&keys_dir).unwrap());
    }

    #[test]
    fn a_key_retired_twice_is_kept_by_its_latest_retirement() {
        // A rotation that failed after retiring the active key (disk full, a crash) and was
        // run again retires the same key twice; an older, expired copy must not hide it.
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let first = Keys::load_at(&s, T).unwrap().access.signing.kid;
        let later = T + 10_000;
        let r = rotate(&s, later, Activation::Now).unwrap();
        assert_eq!(r.retired, Some((first.clone(), retired_until(&s, later))));
        let retired = dir.path().join("keys").join("retired");
        let name = retired_key_name(s.keys.algorithm, later, &first);
        let stale = retired_key_name(s.keys.algorithm, T, &first);
        std::fs::copy(retired.join(&name), retired.join(&stale)).unwrap();
        std::fs::write(
            retired.join(retired_key_name(s.keys.algorithm, later + 1, &first)),
            "garbage",
        )
        .unwrap();
        let now = retired_until(&s, T) + 1;
        assert!(now < retired_until(&s, later));
        let keys = Keys::reload_at(&s, now).unwrap();
        assert_eq!(accepted(&keys), sorted(&[&first, &r.new_kid]));
        let listed = states(&s, now);
        assert!(
            listed.contains(&(
                first.clone(),
                KeyState::Retired {
                    until: retired_until(&s, later)
                }
            )),
            "{listed:?}"
        );
    }

    #[test]
    fn a_damaged_pending_key_is_listed_never_loaded_and_stops_a_rotation() {
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let first = Keys::load_at(&s, T).unwrap().access.signing.kid;
        let bad = dir
            .path()
            .join("keys")
            .join(pending_key_name(s.keys.algorithm, T + 1, "broken"));
        std::fs::write(&bad, "garbage").unwrap();
        let keys = Keys::reload_at(&s, T + 10).unwrap();
        assert_eq!(keys.access.signing.kid, first);
        assert_eq!(accepted(&keys), std::slice::from_ref(&first));
        let listed = states(&s, T + 10);
        assert!(
            matches!(&listed[..], [(_, KeyState::Active), (kid, KeyState::Unreadable(_))] if kid == "broken"),
            "{listed:?}"
        );
        for activation in [Activation::Scheduled, Activation::Now] {
            let e = rotate(&s, T + 10, activation).err().unwrap().to_string();
            assert!(e.contains("remove the file"), "{e}");
        }
        assert!(!dir.path().join("keys/retired").exists());
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
            for activation in [Activation::Scheduled, Activation::Now] {
                let e = rotate(&s, 1_800_000_000, activation)
                    .err()
                    .unwrap()
                    .to_string();
                let name = setting.trim_start_matches("AUTH__").replace("__", ".");
                assert!(e.contains(&name.to_lowercase()), "{e}");
                assert!(!e.contains(key.expose_secret()), "no key material in {e}");
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "wrote nothing"
        );
    }

    #[test]
    fn a_running_server_publishes_then_switches_by_itself_and_keeps_verifying_old_tokens() {
        use crate::security::tokens::{AccessGrant, Expiry, Tokens};
        const T: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let s = rotation_settings(dir.path(), &[]);
        let keys = Keys::load_at(&s, T).unwrap();
        // Two replicas on one keys.dir: `late` has not re-read it since the rotation.
        let tokens = Tokens::new(keys.clone(), &s.tokens);
        let late = Tokens::new(keys, &s.tokens);
        let grant = || AccessGrant {
            user_id: crate::model::UserId::random(),
            username: "alice",
            roles: vec![],
            session_id: crate::model::SessionId::random(),
        };
        let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        let published = |t: &Tokens| {
            let mut kids: Vec<_> = t
                .jwks()
                .keys
                .iter()
                .filter_map(|k| k.common.key_id.clone())
                .collect();
            kids.sort();
            kids
        };
        let old = tokens.issue_access(grant(), T).unwrap();
        let old_kid = kid_of(&old);

        let r = rotate(&s, T, Activation::Scheduled).unwrap();
        let at = r.signs_from;
        // Re-read: the new key verifies and is published, the old one still signs.
        assert!(tokens.replace_access_keys(Keys::reload_at(&s, T).unwrap().access));
        assert!(
            !tokens.replace_access_keys(Keys::reload_at(&s, at - 1).unwrap().access),
            "no change until its time"
        );
        assert_eq!(published(&tokens), sorted(&[&old_kid, &r.new_kid]));
        assert_eq!(kid_of(&tokens.issue_access(grant(), T).unwrap()), old_kid);
        // A token signed with the new key (here by a replica whose clock is ahead) is
        // accepted before this one signs with it.
        let early = Tokens::new(Keys::reload_at(&s, at).unwrap(), &s.tokens);
        let new = early.issue_access(grant(), at - 1).unwrap();
        assert_eq!(kid_of(&new), r.new_kid);
        assert!(tokens.check_access(&new, Expiry::Enforce, at - 1).is_ok());

        // At its time the signing key changes, though no file did.
        assert!(tokens.replace_access_keys(Keys::reload_at(&s, at).unwrap().access));
        let newer = tokens.issue_access(grant(), at).unwrap();
        assert_eq!(kid_of(&newer), r.new_kid);
        for t in [&old, &new, &newer] {
            assert!(tokens.check_access(t, Expiry::Ignore, at).is_ok());
        }
        // A replica re-reading late (one interval) still signs with the old key meanwhile,
        // which every replica accepts.
        let stale = late.issue_access(grant(), at + 1).unwrap();
        assert_eq!(kid_of(&stale), old_kid);
        assert!(tokens.check_access(&stale, Expiry::Enforce, at + 1).is_ok());
        assert!(late.replace_access_keys(Keys::reload_at(&s, at + 1).unwrap().access));
        assert_eq!(
            kid_of(&late.issue_access(grant(), at + 1).unwrap()),
            r.new_kid
        );

        // Once the old key's time has passed, a reload drops it.
        let later = r.retired.unwrap().1 + 1;
        assert!(tokens.replace_access_keys(Keys::reload_at(&s, later).unwrap().access));
        assert_eq!(published(&tokens), std::slice::from_ref(&r.new_kid));
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
