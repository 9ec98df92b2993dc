//! Registered OAuth clients: who they are, what each may do (introspect tokens, use the
//! client-credentials or the password grant), and authenticating them by id and secret.
//!
//! Authentication runs on every introspection, so client records are kept in memory for
//! [`CACHE_SECS`] after each read: a client deleted or given a new secret from the command
//! line is refused by running servers within that time.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::{Context, Error};
use crate::model::ClientInfo;
use crate::security::client_secrets::{ClientSecrets, MIN_SECRET_CHARS};
use crate::security::tokens::{ClientClaims, Tokens};
use crate::storage::DbConn;
use crate::storage::clients::{self as client_table, ClientRecord, RevokedClientToken};

/// How long a server trusts a client record it has read.
pub const CACHE_SECS: i64 = 5;
/// While the database is unavailable, a record read within this long is still used, so
/// resource servers that authenticate (introspection, `/verify` with
/// `verify.require_client`) ride out an outage as `/verify` itself does.
pub const STALE_IF_ERROR_SECS: i64 = 600;
const MAX_CLIENT_ID_CHARS: usize = 64;
/// Machine tokens one client may revoke per minute on one server. Each revocation is a row,
/// an audit event, a notification to every replica and an entry in every replica's index
/// until the token expires; a client that mints and revokes tokens in a loop is held to
/// this, so none of those grows faster than the clients registered allow.
pub const MAX_REVOCATIONS_PER_MINUTE: u32 = 120;
/// The longest secret accepted (and checked).
const MAX_SECRET_BYTES: usize = 512;

/// A registered client, as the operations see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub can_introspect: bool,
    pub can_client_credentials: bool,
    pub can_password: bool,
    /// May report user changes on /internal/user-events (the user service).
    pub can_user_events: bool,
    /// What the client-credentials grant may give it.
    pub scopes: Vec<String>,
}

impl From<&ClientRecord> for Client {
    fn from(r: &ClientRecord) -> Self {
        Client {
            client_id: r.client_id.clone(),
            can_introspect: r.can_introspect,
            can_client_credentials: r.can_client_credentials,
            can_password: r.can_password,
            can_user_events: r.can_user_events,
            scopes: r.scopes.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// An access token issued to a machine client. `Debug` hides the token.
pub struct ClientToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientToken")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// What a client may do, for registration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Permissions {
    pub introspect: bool,
    pub client_credentials: bool,
    pub password: bool,
    pub user_events: bool,
}

/// A scope token (RFC 6749 3.3): printable ASCII except space, `"` and `\\`.
fn validate_scopes(scopes: &[String]) -> Result<(), Error> {
    let ok = |s: &String| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
    };
    if scopes.len() > 32 || !scopes.iter().all(ok) {
        return Err(Error::Validation(
            "scopes: at most 32, each 1 to 64 printable characters without spaces, quotes or backslashes".into(),
        ));
    }
    Ok(())
}

fn validate_client_id(id: &str) -> Result<(), Error> {
    let ok = (1..=MAX_CLIENT_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(Error::Validation(format!(
            "client id: 1 to {MAX_CLIENT_ID_CHARS} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        )));
    }
    // A machine token's `sub` is its client id; a user's is the user's UUID. A client id
    // shaped like a UUID could pass for a user with anyone who reads only `sub`.
    if uuid::Uuid::parse_str(id).is_ok() {
        return Err(Error::Validation(
            "client id: must not be a UUID (users' ids are; a machine token's sub is its client id)"
                .into(),
        ));
    }
    Ok(())
}

/// The secret given, if long enough, or a generated one (returned so it can be shown once).
fn choose_secret(given: Option<SecretString>) -> Result<(SecretString, bool), Error> {
    match given {
        Some(s) if crate::config::is_placeholder_secret(s.expose_secret()) => Err(
            Error::Validation(crate::config::placeholder_refused("client secret")),
        ),
        Some(s) if (MIN_SECRET_CHARS..=MAX_SECRET_BYTES).contains(&s.expose_secret().len()) => {
            Ok((s, false))
        }
        Some(_) => Err(Error::Validation(format!(
            "client secret: {MIN_SECRET_CHARS} to {MAX_SECRET_BYTES} characters (or give none and one is generated)"
        ))),
        None => Ok((SecretString::from(ClientSecrets::generate()), true)),
    }
}

/// A client to register (the command line's `client create`).
pub struct NewClient<'a> {
    pub client_id: &'a str,
    /// `None`: one is generated (and returned, to be shown once).
    pub secret: Option<SecretString>,
    pub permissions: Permissions,
    pub scopes: &'a [String],
    /// When the id is taken, give that client this secret, these permissions and scopes
    /// instead of failing: running it again converges (for provisioning).
    pub update_existing: bool,
}

/// What registering did.
pub struct Registered {
    pub client: Client,
    /// The generated secret, when none was given.
    pub generated: Option<SecretString>,
    /// `false` when an existing client was updated.
    pub created: bool,
}

/// Registers a client, or updates it with [`NewClient::update_existing`].
pub fn create_client(
    conn: &mut DbConn,
    secrets: &ClientSecrets,
    new: NewClient<'_>,
    now: i64,
) -> Result<Registered, Error> {
    let client_id = new.client_id;
    validate_client_id(client_id)?;
    validate_scopes(new.scopes)?;
    let (secret, generated) = choose_secret(new.secret)?;
    let record = ClientRecord {
        client_id: client_id.to_string(),
        secret_hash: secrets.hash(client_id, secret.expose_secret()),
        can_introspect: new.permissions.introspect,
        can_client_credentials: new.permissions.client_credentials,
        can_password: new.permissions.password,
        can_user_events: new.permissions.user_events,
        scopes: new.scopes.join(" "),
        created_at: now,
        updated_at: now,
    };
    let created = client_table::insert(conn, &record)?;
    let replaced = !created && new.update_existing && client_table::replace(conn, &record)?;
    if !created && !replaced {
        return Err(Error::Validation(format!(
            "client id: {client_id:?} is taken"
        )));
    }
    Ok(Registered {
        client: Client::from(&record),
        generated: generated.then_some(secret),
        created,
    })
}

pub fn list_clients(conn: &mut DbConn) -> Result<Vec<Client>, Error> {
    Ok(client_table::list(conn)?.iter().map(Client::from).collect())
}

pub fn delete_client(conn: &mut DbConn, client_id: &str) -> Result<(), Error> {
    if client_table::delete(conn, client_id)? {
        Ok(())
    } else {
        Err(Error::NotFound)
    }
}

/// Gives a client a new secret (the given one, or a generated one, returned).
pub fn rotate_client_secret(
    conn: &mut DbConn,
    secrets: &ClientSecrets,
    client_id: &str,
    secret: Option<SecretString>,
    now: i64,
) -> Result<Option<SecretString>, Error> {
    let (secret, generated) = choose_secret(secret)?;
    let hash = secrets.hash(client_id, secret.expose_secret());
    if !client_table::set_secret_hash(conn, client_id, &hash, now)? {
        return Err(Error::NotFound);
    }
    Ok(generated.then_some(secret))
}

/// How long the one caller that re-reads a stale record waits for the database before it is
/// answered from the stale record (the read goes on in the background).
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A registered client's record as a server keeps it.
#[derive(Clone)]
struct Known {
    record: Arc<ClientRecord>,
    /// The last successful read.
    read_at: i64,
    /// When to read it again: `read_at + CACHE_SECS`, or after a failed read, 5 s later.
    next_read: i64,
}

pub struct Clients {
    ctx: Context,
    secrets: ClientSecrets,
    tokens: Arc<Tokens>,
    /// Records of existing clients. Kept apart from the ids found missing, so requests
    /// naming random ids cannot push real clients' records out.
    known: quick_cache::sync::Cache<String, Known>,
    /// Ids found not to exist, and when; never trusted past [`CACHE_SECS`].
    unknown: quick_cache::sync::Cache<String, i64>,
    /// Ids whose stale record one caller is re-reading; the others use the stale record
    /// meanwhile instead of all asking the database.
    rereading: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Per client id: the minute (its first second) and the revocations made in it.
    revocations: std::sync::Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

impl Clients {
    pub(crate) fn new(ctx: Context, secrets: ClientSecrets, tokens: Arc<Tokens>) -> Clients {
        Clients {
            ctx,
            secrets,
            tokens,
            known: quick_cache::sync::Cache::new(1024),
            unknown: quick_cache::sync::Cache::new(4096),
            rereading: std::sync::Mutex::default(),
            revocations: std::sync::Mutex::default(),
        }
    }

    /// The client-credentials grant: an access token for the client itself, with the
    /// requested scopes (all of its own when none are asked for), no refresh token.
    pub fn issue_token(
        &self,
        client: &Client,
        requested: Option<&str>,
    ) -> Result<ClientToken, Error> {
        if !client.can_client_credentials {
            return Err(Error::UnauthorizedClient);
        }
        let granted: Vec<&str> = match requested.map(str::split_whitespace) {
            Some(asked) => {
                let asked: Vec<&str> = asked.collect();
                if let Some(no) = asked
                    .iter()
                    .find(|s| !client.scopes.iter().any(|c| c == *s))
                {
                    return Err(Error::InvalidScope(format!(
                        "scope {no:?} is not granted to this client"
                    )));
                }
                asked
            }
            None => client.scopes.iter().map(String::as_str).collect(),
        };
        let scope = granted.join(" ");
        let access_token = self
            .tokens
            .issue_client(&client.client_id, &scope, self.ctx.now())?;
        log::info!(
            "client token issued: client_id={} scope={scope:?}",
            client.client_id
        );
        Ok(ClientToken {
            access_token,
            expires_in: self.tokens.access_ttl(),
            scope,
        })
    }

    /// A machine client's access token, if it is good and its client may still get one
    /// (a deleted client's tokens die within [`CACHE_SECS`]).
    pub async fn check_token(&self, token: &str) -> Result<Option<ClientClaims>, Error> {
        let Ok(claims) = self.tokens.check_client(token, self.ctx.now()) else {
            return Ok(None);
        };
        if self.ctx.revoked_tokens.is_revoked(&claims.jti) {
            return Ok(None);
        }
        let allowed = self
            .record(&claims.client_id)
            .await?
            .is_some_and(|r| r.can_client_credentials);
        Ok(allowed.then_some(claims))
    }

    /// Revokes a machine client's access token before its expiry (RFC 7009), for the client
    /// it was issued to: `caller` must be that client, authenticated. Returns `false` when
    /// `token` is no unexpired machine token (then it is the sessions' to look at).
    /// Revoking one twice is no error. Every replica refuses the token at once (the same
    /// index and feed as sessions), and after a restart (it is stored).
    pub async fn revoke_token(
        &self,
        token: &str,
        caller: Option<&Client>,
        info: ClientInfo,
    ) -> Result<bool, Error> {
        let now = self.ctx.now();
        let Ok(claims) = self.tokens.check_client(token, now) else {
            return Ok(false);
        };
        match caller {
            None => return Err(Error::InvalidClient),
            Some(c) if c.client_id != claims.client_id => return Err(Error::UnauthorizedClient),
            Some(_) => {}
        }
        self.admit_revocation(&claims.client_id, now)?;
        let (jti, outbox) = (claims.jti, self.ctx.outbox);
        let client_id = claims.client_id.clone();
        let newly = self
            .ctx
            .db
            .write(move |conn| {
                conn.write_transaction(|conn| {
                    let revoked = RevokedClientToken {
                        jti,
                        client_id: &client_id,
                        expires_at: claims.exp,
                    };
                    let newly = client_table::revoke_token(conn, &revoked, now)?;
                    if newly {
                        AuditEvent::new(AuditKind::ClientTokenRevoked, &info)
                            .detail(serde_json::json!({"client_id": client_id, "jti": jti}))
                            .record(conn, now, outbox)?;
                    }
                    Ok::<_, Error>(newly)
                })
            })
            .await?;
        self.ctx
            .revoked_tokens
            .record(jti, client_table::counted_from(now, claims.exp));
        if newly {
            log::info!("client token revoked: jti={jti}");
        }
        Ok(true)
    }

    /// Counts a revocation by `client_id` against [`MAX_REVOCATIONS_PER_MINUTE`], or refuses
    /// it until the next minute.
    fn admit_revocation(&self, client_id: &str, now: i64) -> Result<(), Error> {
        let minute = now - now.rem_euclid(60);
        let mut counts = self.revocations.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= 1024 {
            // Only authenticated clients get here; still, past minutes are forgotten.
            counts.retain(|_, (at, _)| *at == minute);
        }
        let (at, n) = counts.entry(client_id.to_string()).or_insert((minute, 0));
        if *at != minute {
            (*at, *n) = (minute, 0);
        }
        if *n >= MAX_REVOCATIONS_PER_MINUTE {
            return Err(Error::TooManyAttempts {
                retry_after: minute + 60 - now,
            });
        }
        *n += 1;
        Ok(())
    }

    /// The client's record: from memory while fresh ([`CACHE_SECS`]); then re-read by one
    /// caller, the others using the stale record meanwhile. When the database does not
    /// answer within [`REFRESH_WAIT`] (an outage), a record read successfully in the last
    /// [`STALE_IF_ERROR_SECS`] is used and the database is not asked again for
    /// [`CACHE_SECS`]; so resource servers are answered through an outage without waiting
    /// on it. A missing client is never answered from a stale entry.
    async fn record(&self, client_id: &str) -> Result<Option<Arc<ClientRecord>>, Error> {
        let now = self.ctx.now();
        let known = self.known.get(client_id);
        let stale = match &known {
            Some(k) if now < k.next_read => return Ok(Some(k.record.clone())),
            Some(k) if now - k.read_at < STALE_IF_ERROR_SECS => Some(k.clone()),
            _ => None,
        };
        if stale.is_none()
            && let Some(at) = self.unknown.get(client_id)
            && now - at < CACHE_SECS
        {
            return Ok(None);
        }
        let id = client_id.to_string();
        let read = self.ctx.db.run(move |conn| client_table::find(conn, &id));
        let Some(stale) = stale else {
            let found = read.await.map_err(Error::from)?;
            return Ok(self.remember(client_id, found, now));
        };
        // One caller re-reads; the rest use the stale record meanwhile.
        if !self.lock_rereading().insert(client_id.to_string()) {
            return Ok(Some(stale.record));
        }
        let outcome = tokio::time::timeout(REFRESH_WAIT, read).await;
        self.lock_rereading().remove(client_id);
        match outcome {
            Ok(Ok(found)) => Ok(self.remember(client_id, found, now)),
            Ok(Err(e)) if !e.is_unavailable() => Err(e.into()),
            // Unavailable, or no answer in time: the stale record, and no new attempt for
            // a while.
            _ => {
                self.known.insert(
                    client_id.to_string(),
                    Known {
                        next_read: now + CACHE_SECS,
                        ..stale.clone()
                    },
                );
                Ok(Some(stale.record))
            }
        }
    }

    fn lock_rereading(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.rereading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps what a read found.
    fn remember(
        &self,
        client_id: &str,
        found: Option<ClientRecord>,
        now: i64,
    ) -> Option<Arc<ClientRecord>> {
        match found {
            Some(record) => {
                let record = Arc::new(record);
                self.unknown.remove(client_id);
                self.known.insert(
                    client_id.to_string(),
                    Known {
                        record: record.clone(),
                        read_at: now,
                        next_read: now + CACHE_SECS,
                    },
                );
                Some(record)
            }
            None => {
                self.known.remove(client_id);
                self.unknown.insert(client_id.to_string(), now);
                None
            }
        }
    }

    /// A resource server: a client with this id and secret that may check tokens
    /// (`--introspect`); `InvalidClient` for bad credentials, `UnauthorizedClient` for a
    /// client without the permission.
    pub async fn authenticate_resource_server(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Client, Error> {
        let client = self.authenticate(client_id, secret).await?;
        if client.can_introspect {
            Ok(client)
        } else {
            Err(Error::UnauthorizedClient)
        }
    }

    /// The client with this id and secret, or `InvalidClient` (the same for an unknown id
    /// and a wrong secret).
    pub async fn authenticate(&self, client_id: &str, secret: &str) -> Result<Client, Error> {
        if client_id.is_empty()
            || client_id.len() > MAX_CLIENT_ID_CHARS
            || secret.len() > MAX_SECRET_BYTES
        {
            return Err(Error::InvalidClient);
        }
        let record = self.record(client_id).await?;
        match record {
            Some(r) if self.secrets.matches(client_id, secret, &r.secret_hash) => {
                Ok(Client::from(r.as_ref()))
            }
            // A hash anyway, so an unknown id costs what a wrong secret does.
            None => {
                let _ = self.secrets.hash(client_id, secret);
                Err(Error::InvalidClient)
            }
            Some(_) => Err(Error::InvalidClient),
        }
    }
}
