//! Registered OAuth clients: who they are, what each may do (introspect tokens, use the
//! client-credentials or the password grant), and authenticating them by id and secret.
//!
//! Authentication runs on every introspection, so client records are kept in memory for
//! [`CACHE_SECS`] after each read: a client deleted or given a new secret from the command
//! line is refused by running servers within that time.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::{Context, Error};
use crate::security::client_secrets::{ClientSecrets, MIN_SECRET_CHARS};
use crate::security::tokens::{ClientClaims, Tokens};
use crate::storage::DbConn;
use crate::storage::clients::{self as client_table, ClientRecord};

/// How long a server trusts a client record it has read.
pub const CACHE_SECS: i64 = 5;
/// While the database is unavailable, a record read within this long is still used, so
/// resource servers that authenticate (introspection, `/verify` with
/// `verify.require_client`) ride out an outage as `/verify` itself does.
pub const STALE_IF_ERROR_SECS: i64 = 600;
const MAX_CLIENT_ID_CHARS: usize = 64;
/// The longest secret accepted (and checked).
const MAX_SECRET_BYTES: usize = 512;

/// A registered client, as the operations see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub can_introspect: bool,
    pub can_client_credentials: bool,
    pub can_password: bool,
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
            scopes: r.scopes.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// An access token issued to a machine client.
#[derive(Debug)]
pub struct ClientToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

/// What a client may do, for registration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Permissions {
    pub introspect: bool,
    pub client_credentials: bool,
    pub password: bool,
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
    if ok {
        Ok(())
    } else {
        Err(Error::Validation(format!(
            "client id: 1 to {MAX_CLIENT_ID_CHARS} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

/// The secret given, if long enough, or a generated one (returned so it can be shown once).
fn choose_secret(given: Option<SecretString>) -> Result<(SecretString, bool), Error> {
    match given {
        Some(s) if (MIN_SECRET_CHARS..=MAX_SECRET_BYTES).contains(&s.expose_secret().len()) => {
            Ok((s, false))
        }
        Some(_) => Err(Error::Validation(format!(
            "client secret: {MIN_SECRET_CHARS} to {MAX_SECRET_BYTES} characters (or give none and one is generated)"
        ))),
        None => Ok((SecretString::from(ClientSecrets::generate()), true)),
    }
}

/// Registers a client (the command line's `client create`). Returns the client and, when
/// none was given, the generated secret.
pub fn create_client(
    conn: &mut DbConn,
    secrets: &ClientSecrets,
    client_id: &str,
    secret: Option<SecretString>,
    permissions: Permissions,
    scopes: &[String],
    now: i64,
) -> Result<(Client, Option<SecretString>), Error> {
    register(
        conn,
        secrets,
        client_id,
        secret,
        permissions,
        scopes,
        now,
        false,
    )
    .map(|(client, secret, _)| (client, secret))
}

/// [`create_client`], or, when the id is taken, the same client given this secret,
/// these permissions and scopes: running it again converges (for provisioning). The
/// `bool` says whether the client was created.
pub fn create_or_update_client(
    conn: &mut DbConn,
    secrets: &ClientSecrets,
    client_id: &str,
    secret: Option<SecretString>,
    permissions: Permissions,
    scopes: &[String],
    now: i64,
) -> Result<(Client, Option<SecretString>, bool), Error> {
    register(
        conn,
        secrets,
        client_id,
        secret,
        permissions,
        scopes,
        now,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn register(
    conn: &mut DbConn,
    secrets: &ClientSecrets,
    client_id: &str,
    secret: Option<SecretString>,
    permissions: Permissions,
    scopes: &[String],
    now: i64,
    update_existing: bool,
) -> Result<(Client, Option<SecretString>, bool), Error> {
    validate_client_id(client_id)?;
    validate_scopes(scopes)?;
    let (secret, generated) = choose_secret(secret)?;
    let record = ClientRecord {
        client_id: client_id.to_string(),
        secret_hash: secrets.hash(client_id, secret.expose_secret()),
        can_introspect: permissions.introspect,
        can_client_credentials: permissions.client_credentials,
        can_password: permissions.password,
        scopes: scopes.join(" "),
        created_at: now,
        updated_at: now,
    };
    let created = client_table::insert(conn, &record)?;
    let replaced = !created && update_existing && client_table::replace(conn, &record)?;
    if !created && !replaced {
        return Err(Error::Validation(format!(
            "client id: {client_id:?} is taken"
        )));
    }
    Ok((Client::from(&record), generated.then_some(secret), created))
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

pub struct Clients {
    ctx: Context,
    secrets: ClientSecrets,
    tokens: Arc<Tokens>,
    /// client id → (the record, or none, and when it was read).
    cache: quick_cache::sync::Cache<String, (Option<ClientRecord>, i64)>,
}

impl Clients {
    pub(crate) fn new(ctx: Context, secrets: ClientSecrets, tokens: Arc<Tokens>) -> Clients {
        Clients {
            ctx,
            secrets,
            tokens,
            cache: quick_cache::sync::Cache::new(1024),
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
        let allowed = self
            .record(&claims.client_id)
            .await?
            .is_some_and(|r| r.can_client_credentials);
        Ok(allowed.then_some(claims))
    }

    /// The client's record, from the cache while fresh; while the database is unavailable,
    /// from the cache up to [`STALE_IF_ERROR_SECS`] old.
    async fn record(&self, client_id: &str) -> Result<Option<ClientRecord>, Error> {
        let now = self.ctx.now();
        let cached = self.cache.get(client_id);
        if let Some((record, read_at)) = &cached
            && now - read_at < CACHE_SECS
        {
            return Ok(record.clone());
        }
        let id = client_id.to_string();
        match self
            .ctx
            .db
            .run(move |conn| client_table::find(conn, &id))
            .await
            .map_err(Error::from)
        {
            Ok(record) => {
                self.cache
                    .insert(client_id.to_string(), (record.clone(), now));
                Ok(record)
            }
            Err(e @ Error::Unavailable(_)) => match cached {
                Some((record, read_at)) if now - read_at < STALE_IF_ERROR_SECS => Ok(record),
                _ => Err(e),
            },
            Err(e) => Err(e),
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
                Ok(Client::from(&r))
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
