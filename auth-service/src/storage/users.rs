//! The `users` and `user_roles` tables: accounts, their credentials and their roles.

use std::collections::HashMap;

use diesel::prelude::*;

use crate::model::{Role, Roles, UserId};
use crate::storage::schema::{user_roles, users};
use crate::storage::{DbConn, StorageError};

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    password_hash: String,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct NewUserRow<'a> {
    id: String,
    username: &'a str,
    username_key: String,
    email: Option<&'a str>,
    password_hash: &'a str,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
}

/// A stored user with their roles. `Debug` is written by hand so that the password hash
/// never reaches a log line.
#[derive(Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub roles: Roles,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl UserRecord {
    /// An enabled user with the admin role.
    pub fn is_admin(&self) -> bool {
        !self.disabled && self.roles.is_admin()
    }
}

/// A user about to be stored.
pub struct NewUser<'a> {
    pub id: UserId,
    pub username: &'a str,
    /// Lower-cased already.
    pub email: Option<&'a str>,
    pub password_hash: &'a str,
    pub roles: &'a Roles,
    pub now: i64,
}

/// What inserting a user led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    UsernameTaken,
    EmailTaken,
}

fn parse_id(raw: &str) -> Result<UserId, StorageError> {
    UserId::parse(raw).map_err(|_| StorageError::Corrupt(format!("users.id {raw:?}")))
}

fn record(row: UserRow, roles: Roles) -> Result<UserRecord, StorageError> {
    Ok(UserRecord {
        id: parse_id(&row.id)?,
        username: row.username,
        email: row.email,
        password_hash: row.password_hash,
        roles,
        disabled: row.disabled,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Roles as stored. A name that breaks today's rules (possible only by editing the table by
/// hand) is skipped with a warning rather than failing every request of that user.
fn parse_roles(names: &[String]) -> Result<Roles, StorageError> {
    let mut roles = Roles::default();
    for name in names {
        match Role::parse(name) {
            Ok(role) => {
                if roles.insert(role).is_err() {
                    log::warn!("user_roles: more roles than allowed; ignoring {name:?}");
                }
            }
            Err(e) => log::warn!("user_roles: ignoring a stored role: {e}"),
        }
    }
    Ok(roles)
}

/// Stores a user and their roles. A taken username or email is an outcome, not an error.
pub fn insert(conn: &mut DbConn, user: &NewUser<'_>) -> Result<Inserted, StorageError> {
    let row = NewUserRow {
        id: user.id.to_string(),
        username: user.username,
        username_key: user.username.to_lowercase(),
        email: user.email,
        password_hash: user.password_hash,
        disabled: false,
        created_at: user.now,
        updated_at: user.now,
    };
    let inserted = conn.insert_unless_taken(|conn| {
        diesel::insert_into(users::table)
            .values(&row)
            .execute(conn)?;
        replace_roles(conn, &user.id, user.roles)?;
        Ok(())
    })?;
    if inserted {
        return Ok(Inserted::Yes);
    }
    let name_taken = users::table
        .filter(users::username_key.eq(&row.username_key))
        .count()
        .get_result::<i64>(conn)?
        > 0;
    Ok(if name_taken {
        Inserted::UsernameTaken
    } else {
        Inserted::EmailTaken
    })
}

pub fn find(conn: &mut DbConn, id: &UserId) -> Result<Option<UserRecord>, StorageError> {
    let row: Option<UserRow> = users::table
        .find(id.to_string())
        .select(UserRow::as_select())
        .first(conn)
        .optional()?;
    match row {
        Some(row) => {
            let roles = roles_of(conn, id)?;
            Ok(Some(record(row, roles)?))
        }
        None => Ok(None),
    }
}

/// What a login needs to check a password, and nothing more.
pub struct Credentials {
    pub id: UserId,
    pub password_hash: String,
    pub disabled: bool,
}

/// Finds the user a login names: an email address (contains `@`) or a username, both
/// case-insensitively.
pub fn find_credentials(
    conn: &mut DbConn,
    login: &str,
) -> Result<Option<Credentials>, StorageError> {
    let key = login.to_lowercase();
    let query = users::table
        .select((users::id, users::password_hash, users::disabled))
        .into_boxed();
    let query = if key.contains('@') {
        query.filter(users::email.eq(key))
    } else {
        query.filter(users::username_key.eq(key))
    };
    let row: Option<(String, String, bool)> = query.first(conn).optional()?;
    row.map(|(id, password_hash, disabled)| {
        Ok(Credentials {
            id: parse_id(&id)?,
            password_hash,
            disabled,
        })
    })
    .transpose()
}

pub fn roles_of(conn: &mut DbConn, id: &UserId) -> Result<Roles, StorageError> {
    let names: Vec<String> = user_roles::table
        .filter(user_roles::user_id.eq(id.to_string()))
        .select(user_roles::role)
        .load(conn)?;
    parse_roles(&names)
}

fn replace_roles(conn: &mut DbConn, id: &UserId, roles: &Roles) -> Result<(), StorageError> {
    let id = id.to_string();
    diesel::delete(user_roles::table.filter(user_roles::user_id.eq(&id))).execute(conn)?;
    // One statement per role (at most 16): batch inserts are not portable across the
    // backends of a multi-connection.
    for role in roles.iter() {
        diesel::insert_into(user_roles::table)
            .values((
                user_roles::user_id.eq(&id),
                user_roles::role.eq(role.as_str()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Replaces a user's roles. `false` if there is no such user.
pub fn set_roles(
    conn: &mut DbConn,
    id: &UserId,
    roles: &Roles,
    now: i64,
) -> Result<bool, StorageError> {
    conn.write_transaction(|conn| {
        let n = diesel::update(users::table.find(id.to_string()))
            .set(users::updated_at.eq(now))
            .execute(conn)?;
        if n == 0 {
            return Ok(false);
        }
        replace_roles(conn, id, roles)?;
        Ok(true)
    })
}

/// Disables or enables a user. `false` if there is no such user.
pub fn set_disabled(
    conn: &mut DbConn,
    id: &UserId,
    disabled: bool,
    now: i64,
) -> Result<bool, StorageError> {
    let n = diesel::update(users::table.find(id.to_string()))
        .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(n == 1)
}

pub fn update_password_hash(
    conn: &mut DbConn,
    id: &UserId,
    hash: &str,
    now: i64,
) -> Result<(), StorageError> {
    diesel::update(users::table.find(id.to_string()))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Serialises changes that can affect who is an administrator, so two of them can never
/// both pass the last-admin check. SQLite's `BEGIN IMMEDIATE` already serialises writers.
pub fn lock_admin_changes(conn: &mut DbConn) -> Result<(), StorageError> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE").execute(c)?;
    }
    Ok(())
}

/// Locks a user's row against changes until the transaction ends (PostgreSQL `FOR SHARE`;
/// SQLite's `BEGIN IMMEDIATE` already holds the write lock). Disabling a user and changing
/// roles update that row, so they wait for, or come before, whatever is opened under it.
pub fn lock_for_session(conn: &mut DbConn, id: &UserId) -> Result<(), StorageError> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("SELECT id FROM users WHERE id = $1 FOR SHARE")
            .bind::<diesel::sql_types::Text, _>(id.to_string())
            .execute(c)?;
    }
    Ok(())
}

/// Whether an enabled user other than `except` holds the admin role.
pub fn other_admin_exists(conn: &mut DbConn, except: &UserId) -> Result<bool, StorageError> {
    let admin = Role::admin();
    let count: i64 = user_roles::table
        .inner_join(users::table)
        .filter(user_roles::role.eq(admin.as_str()))
        .filter(users::disabled.eq(false))
        .filter(users::id.ne(except.to_string()))
        .count()
        .get_result(conn)?;
    Ok(count > 0)
}

/// One page of users in (created_at, id) order, after the given position.
pub fn list(
    conn: &mut DbConn,
    username_contains: Option<&str>,
    after: Option<(i64, UserId)>,
    limit: i64,
) -> Result<Vec<UserRecord>, StorageError> {
    let mut query = users::table.select(UserRow::as_select()).into_boxed();
    if let Some(fragment) = username_contains {
        let escaped = fragment
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(
            users::username_key
                .like(format!("%{escaped}%"))
                .escape('\\'),
        );
    }
    if let Some((created_at, id)) = after {
        let id = id.to_string();
        query = query.filter(
            users::created_at
                .gt(created_at)
                .or(users::created_at.eq(created_at).and(users::id.gt(id))),
        );
    }
    let rows: Vec<UserRow> = query
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit)
        .load(conn)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let pairs: Vec<(String, String)> = user_roles::table
        .filter(user_roles::user_id.eq_any(&ids))
        .select((user_roles::user_id, user_roles::role))
        .load(conn)?;
    let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
    for (user, role) in pairs {
        by_user.entry(user).or_default().push(role);
    }
    rows.into_iter()
        .map(|row| {
            let roles = parse_roles(by_user.get(&row.id).map_or(&[][..], Vec::as_slice))?;
            record(row, roles)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_debug_never_shows_the_hash() {
        let user = UserRecord {
            id: UserId::random(),
            username: "alice".into(),
            email: None,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: Roles::default_for_new_user(),
            disabled: false,
            created_at: 0,
            updated_at: 0,
        };
        let shown = format!("{user:?}");
        assert!(
            shown.contains("alice") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("argon2"), "{shown}");
    }
}
