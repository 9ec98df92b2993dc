//! Registered OAuth clients: who they are, what each may do (introspect tokens, use the
//! client-credentials or the password grant), and authenticating them by id and secret.
//!
//! Authentication runs on every introspection, so client records are kept in memory for
//! [`CACHE_SECS`] after each read: a client deleted or given a new secret from the command
//! line is refused by running servers within that time.

use secrecy::{ExposeSecret, SecretString};

use crate::domain::{Context, Error};
use crate::security::client_secrets::{ClientSecrets, MIN_SECRET_CHARS};
use crate::storage::DbConn;
use crate::storage::clients::{self as client_table, ClientRecord};

/// How long a server trusts a client record it has read.
pub const CACHE_SECS: i64 = 5;
const MAX_CLIENT_ID_CHARS: usize = 64;

/// A registered client, as the operations see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub can_introspect: bool,
    pub can_client_credentials: bool,
    pub can_password: bool,
}

impl From<&ClientRecord> for Client {
    fn from(r: &ClientRecord) -> Self {
        Client {
            client_id: r.client_id.clone(),
            can_introspect: r.can_introspect,
            can_client_credentials: r.can_client_credentials,
            can_password: r.can_password,
        }
    }
}

/// What a client may do, for registration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Permissions {
    pub introspect: bool,
    pub client_credentials: bool,
    pub password: bool,
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
        Some(s) if s.expose_secret().chars().count() >= MIN_SECRET_CHARS => Ok((s, false)),
        Some(_) => Err(Error::Validation(format!(
            "client secret: at least {MIN_SECRET_CHARS} characters (or give none and one is generated)"
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
    now: i64,
) -> Result<(Client, Option<SecretString>), Error> {
    validate_client_id(client_id)?;
    let (secret, generated) = choose_secret(secret)?;
    let record = ClientRecord {
        client_id: client_id.to_string(),
        secret_hash: secrets.hash(client_id, secret.expose_secret()),
        can_introspect: permissions.introspect,
        can_client_credentials: permissions.client_credentials,
        can_password: permissions.password,
        created_at: now,
        updated_at: now,
    };
    if !client_table::insert(conn, &record)? {
        return Err(Error::Validation(format!(
            "client id: {client_id:?} is taken"
        )));
    }
    Ok((Client::from(&record), generated.then_some(secret)))
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
    /// client id → (the record, or none, and when it was read).
    cache: quick_cache::sync::Cache<String, (Option<ClientRecord>, i64)>,
}

impl Clients {
    pub(crate) fn new(ctx: Context, secrets: ClientSecrets) -> Clients {
        Clients {
            ctx,
            secrets,
            cache: quick_cache::sync::Cache::new(1024),
        }
    }

    /// The client with this id and secret, or `InvalidClient` (the same for an unknown id
    /// and a wrong secret).
    pub async fn authenticate(&self, client_id: &str, secret: &str) -> Result<Client, Error> {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_CHARS || secret.len() > 512 {
            return Err(Error::InvalidClient);
        }
        let now = self.ctx.now();
        let record = match self.cache.get(client_id) {
            Some((record, read_at)) if now - read_at < CACHE_SECS => record,
            _ => {
                let id = client_id.to_string();
                let record = self
                    .ctx
                    .db
                    .run(move |conn| client_table::find(conn, &id))
                    .await?;
                self.cache
                    .insert(client_id.to_string(), (record.clone(), now));
                record
            }
        };
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
