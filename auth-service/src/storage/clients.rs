//! The `clients` table: registered OAuth clients and what each may do; and
//! `revoked_client_tokens`: their access tokens revoked before expiry.

use diesel::prelude::*;

use crate::model::TokenId;
use crate::storage::revocation_feed;
use crate::storage::schema::{clients, revoked_client_tokens};
use crate::storage::{DbConn, StorageError};

/// A registered client. `Debug` hides the secret's hash.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
pub struct ClientRecord {
    pub client_id: String,
    pub secret_hash: String,
    pub can_introspect: bool,
    pub can_client_credentials: bool,
    pub can_password: bool,
    /// Space-separated scopes it may be granted (client credentials).
    pub scopes: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// May report user changes (the user service, with remote users).
    pub can_user_events: bool,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("secret_hash", &"<redacted>")
            .field("can_introspect", &self.can_introspect)
            .field("can_client_credentials", &self.can_client_credentials)
            .field("can_password", &self.can_password)
            .field("can_user_events", &self.can_user_events)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Stores a client; `false` if the id is taken.
pub fn insert(conn: &mut DbConn, client: &ClientRecord) -> Result<bool, StorageError> {
    conn.insert_unless_taken(|conn| {
        diesel::insert_into(clients::table)
            .values(client)
            .execute(conn)?;
        Ok(())
    })
}

pub fn find(conn: &mut DbConn, client_id: &str) -> Result<Option<ClientRecord>, StorageError> {
    Ok(clients::table
        .find(client_id)
        .select(ClientRecord::as_select())
        .first(conn)
        .optional()?)
}

pub fn list(conn: &mut DbConn) -> Result<Vec<ClientRecord>, StorageError> {
    Ok(clients::table
        .order(clients::client_id.asc())
        .select(ClientRecord::as_select())
        .load(conn)?)
}

/// Replaces an existing client's secret hash, permissions and scopes (keeping its
/// `created_at`); `false` if there is no such client.
pub fn replace(conn: &mut DbConn, client: &ClientRecord) -> Result<bool, StorageError> {
    Ok(diesel::update(clients::table.find(&client.client_id))
        .set((
            clients::secret_hash.eq(&client.secret_hash),
            clients::can_introspect.eq(client.can_introspect),
            clients::can_client_credentials.eq(client.can_client_credentials),
            clients::can_password.eq(client.can_password),
            clients::can_user_events.eq(client.can_user_events),
            clients::scopes.eq(&client.scopes),
            clients::updated_at.eq(client.updated_at),
        ))
        .execute(conn)?
        == 1)
}

/// `false` if there is no such client.
pub fn delete(conn: &mut DbConn, client_id: &str) -> Result<bool, StorageError> {
    Ok(diesel::delete(clients::table.find(client_id)).execute(conn)? == 1)
}

/// `false` if there is no such client.
pub fn set_secret_hash(
    conn: &mut DbConn,
    client_id: &str,
    secret_hash: &str,
    now: i64,
) -> Result<bool, StorageError> {
    Ok(diesel::update(clients::table.find(client_id))
        .set((
            clients::secret_hash.eq(secret_hash),
            clients::updated_at.eq(now),
        ))
        .execute(conn)?
        == 1)
}

/// A machine token to revoke: its `jti`, its client and its own `exp`.
pub struct RevokedClientToken<'a> {
    pub jti: TokenId,
    pub client_id: &'a str,
    pub expires_at: i64,
}

/// Records that a client's access token was revoked at `now`, and announces it to the other
/// replicas in the same transaction; `false` (and no announcement) when it was revoked
/// already. The announcement carries [`counted_from`], as [`revoked_tokens_since`] does.
pub fn revoke_token(
    conn: &mut DbConn,
    token: &RevokedClientToken<'_>,
    now: i64,
) -> Result<bool, StorageError> {
    let jti = token.jti.to_string();
    let newly = conn.insert_unless_taken(|conn| {
        diesel::insert_into(revoked_client_tokens::table)
            .values((
                revoked_client_tokens::jti.eq(&jti),
                revoked_client_tokens::client_id.eq(token.client_id),
                revoked_client_tokens::revoked_at.eq(now),
                revoked_client_tokens::expires_at.eq(token.expires_at),
            ))
            .execute(conn)?;
        Ok(())
    })?;
    if newly {
        let from = counted_from(now, token.expires_at);
        revocation_feed::announce_client_tokens(conn, &[token.jti], from)?;
    }
    Ok(newly)
}

/// The time a revoked client token's horizon counts from: the later of its revocation and
/// its own `exp`. A revocation is remembered (and its row kept) for the revocation horizon
/// after that, so it outlives the token whatever `tokens.access_ttl` is now (a token issued
/// under a longer one, before a change) and whichever replica's clock issued it.
pub fn counted_from(revoked_at: i64, expires_at: i64) -> i64 {
    revoked_at.max(expires_at)
}

/// Client tokens whose revocation still counts at `since` (see [`counted_from`]), with the
/// time it counts from. A row whose `jti` is no id is skipped, with a warning: it cannot
/// name a token, and must not keep the others (or the sessions') from loading.
pub fn revoked_tokens_since(
    conn: &mut DbConn,
    since: i64,
) -> Result<Vec<(TokenId, i64)>, StorageError> {
    let rows: Vec<(String, i64, i64)> = revoked_client_tokens::table
        .filter(
            revoked_client_tokens::revoked_at
                .ge(since)
                .or(revoked_client_tokens::expires_at.ge(since)),
        )
        .select((
            revoked_client_tokens::jti,
            revoked_client_tokens::revoked_at,
            revoked_client_tokens::expires_at,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(jti, at, exp)| match TokenId::parse(&jti) {
            Ok(id) => Some((id, counted_from(at, exp))),
            Err(_) => {
                log::warn!("revoked_client_tokens: skipped a row whose jti is not an id");
                None
            }
        })
        .collect())
}
