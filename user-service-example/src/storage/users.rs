//! The `users` and `user_roles` tables. Every change that the auth service must hear about
//! writes its notification in the same transaction (see [`super::notifications`]).

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::error::Error;
use crate::model::{NotificationKind, Role, User, UserId};
use crate::storage::schema::{user_roles, users};
use crate::storage::{DbConn, db_error, notifications};

#[derive(Debug, Clone, Queryable, Selectable)]
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

/// A user with the hash their password is checked against.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// What registration stores.
pub struct NewUser<'a> {
    pub id: UserId,
    pub username: &'a str,
    /// Lower-cased already.
    pub email: Option<&'a str>,
    pub password_hash: &'a str,
    pub roles: &'a BTreeSet<Role>,
    pub now: i64,
}

fn user_of(row: UserRow, roles: Vec<String>) -> Result<User, Error> {
    let id = uuid::Uuid::parse_str(&row.id)
        .map_err(|e| Error::internal(format!("stored user id is not a UUID: {e}")))?;
    Ok(User {
        id: UserId(id),
        username: row.username,
        email: row.email,
        roles,
        disabled: row.disabled,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn roles_of(conn: &mut DbConn, id: &str) -> Result<Vec<String>, Error> {
    user_roles::table
        .filter(user_roles::user_id.eq(id))
        .select(user_roles::role)
        .order(user_roles::role.asc())
        .load(conn)
        .map_err(db_error)
}

// One row at a time: the multi-backend connection has no batch insert.
fn add_role(conn: &mut DbConn, user_id: &str, role: &str) -> Result<(), Error> {
    diesel::insert_into(user_roles::table)
        .values((user_roles::user_id.eq(user_id), user_roles::role.eq(role)))
        .execute(conn)
        .map_err(db_error)?;
    Ok(())
}

fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Stores a new user with its roles. A username (case-insensitively) or email that is
/// taken is [`Error::UsernameTaken`], also when another registration wins a race.
pub fn insert(conn: &mut DbConn, new: &NewUser<'_>) -> Result<User, Error> {
    let id = new.id.to_string();
    let username_key = new.username.to_lowercase();
    conn.write_transaction(|conn| {
        let mut taken = users::table
            .filter(users::username_key.eq(&username_key))
            .into_boxed();
        if let Some(email) = new.email {
            taken = taken.or_filter(users::email.eq(email));
        }
        let taken: i64 = taken.count().get_result(conn).map_err(db_error)?;
        if taken > 0 {
            return Err(Error::UsernameTaken);
        }
        diesel::insert_into(users::table)
            .values((
                users::id.eq(&id),
                users::username.eq(new.username),
                users::username_key.eq(&username_key),
                users::email.eq(new.email),
                users::password_hash.eq(new.password_hash),
                users::disabled.eq(false),
                users::created_at.eq(new.now),
                users::updated_at.eq(new.now),
            ))
            .execute(conn)
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::UsernameTaken
                } else {
                    db_error(e)
                }
            })?;
        for role in new.roles {
            add_role(conn, &id, role.as_str())?;
        }
        Ok(())
    })?;
    Ok(User {
        id: new.id,
        username: new.username.to_string(),
        email: new.email.map(str::to_string),
        roles: new.roles.iter().map(|r| r.as_str().to_string()).collect(),
        disabled: false,
        created_at: new.now,
        updated_at: new.now,
    })
}

/// The user whose username or email is `login` (case-insensitively), with their hash.
pub fn find_by_login(conn: &mut DbConn, login: &str) -> Result<Option<Credentials>, Error> {
    let key = login.to_lowercase();
    // Usernames cannot hold '@' and emails must, so at most one row matches.
    let row = users::table
        .filter(users::username_key.eq(&key).or(users::email.eq(&key)))
        .select(UserRow::as_select())
        .order(users::created_at.asc())
        .first(conn)
        .optional()
        .map_err(db_error)?;
    credentials_of(conn, row)
}

/// A user by id, with their hash.
pub fn find_credentials(conn: &mut DbConn, id: UserId) -> Result<Option<Credentials>, Error> {
    let row = users::table
        .find(id.to_string())
        .select(UserRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_error)?;
    credentials_of(conn, row)
}

fn credentials_of(conn: &mut DbConn, row: Option<UserRow>) -> Result<Option<Credentials>, Error> {
    let Some(row) = row else {
        return Ok(None);
    };
    let roles = roles_of(conn, &row.id)?;
    let password_hash = row.password_hash.clone();
    Ok(Some(Credentials {
        user: user_of(row, roles)?,
        password_hash,
    }))
}

/// A user by id.
pub fn find(conn: &mut DbConn, id: UserId) -> Result<Option<User>, Error> {
    Ok(find_credentials(conn, id)?.map(|c| c.user))
}

/// One page of users in registration order, and whether more follow.
pub fn list(conn: &mut DbConn, limit: i64, offset: i64) -> Result<(Vec<User>, bool), Error> {
    let mut rows: Vec<UserRow> = users::table
        .select(UserRow::as_select())
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit + 1)
        .offset(offset)
        .load(conn)
        .map_err(db_error)?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut roles: HashMap<String, Vec<String>> = HashMap::new();
    let pairs: Vec<(String, String)> = user_roles::table
        .filter(user_roles::user_id.eq_any(&ids))
        .select((user_roles::user_id, user_roles::role))
        .order((user_roles::user_id.asc(), user_roles::role.asc()))
        .load(conn)
        .map_err(db_error)?;
    for (user_id, role) in pairs {
        roles.entry(user_id).or_default().push(role);
    }
    let users = rows
        .into_iter()
        .map(|row| {
            let r = roles.remove(&row.id).unwrap_or_default();
            user_of(row, r)
        })
        .collect::<Result<Vec<User>, Error>>()?;
    Ok((users, more))
}

/// Replaces the password hash, if it is still `expected` (the one the current password was
/// checked against). A hash changed meanwhile is [`Error::InvalidCredentials`]: the password
/// that was checked is no longer current. Nothing is noted for the auth service: only it
/// calls this (for its logged-in user), and it ends the user's other sessions itself — a
/// `password_changed` report would also end the session that made the change.
pub fn set_password(
    conn: &mut DbConn,
    id: UserId,
    expected: &str,
    new_hash: &str,
    now: i64,
) -> Result<(), Error> {
    let id_text = id.to_string();
    conn.write_transaction(|conn| {
        let changed = diesel::update(
            users::table
                .filter(users::id.eq(&id_text))
                .filter(users::password_hash.eq(expected))
                .filter(users::disabled.eq(false)),
        )
        .set((users::password_hash.eq(new_hash), users::updated_at.eq(now)))
        .execute(conn)
        .map_err(db_error)?;
        if changed == 0 {
            return Err(Error::InvalidCredentials);
        }
        Ok(())
    })
}

/// Disables or enables a user; returns the user and whether anything changed. Disabling
/// notes `user_disabled` (only when the user was enabled).
pub fn set_disabled(
    conn: &mut DbConn,
    id: UserId,
    disabled: bool,
    now: i64,
) -> Result<(User, bool), Error> {
    let id_text = id.to_string();
    conn.write_transaction(|conn| {
        // The guarded UPDATE is also the row lock on PostgreSQL: two operators disabling at
        // once write one notification.
        let changed = diesel::update(
            users::table
                .filter(users::id.eq(&id_text))
                .filter(users::disabled.eq(!disabled)),
        )
        .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
        .execute(conn)
        .map_err(db_error)?
            > 0;
        if changed && disabled {
            notifications::record(conn, NotificationKind::UserDisabled, id, None, now)?;
        }
        let user = find(conn, id)?.ok_or(Error::NotFound)?;
        Ok((user, changed))
    })
}

/// Replaces a user's roles with `roles` (which holds `user`); notes one `role_revoked` per
/// role taken away. Returns the user.
pub fn set_roles(
    conn: &mut DbConn,
    id: UserId,
    roles: &BTreeSet<Role>,
    now: i64,
) -> Result<User, Error> {
    let id_text = id.to_string();
    conn.write_transaction(|conn| {
        // Locks the user's row (PostgreSQL) so concurrent role changes take turns.
        let found = diesel::update(users::table.filter(users::id.eq(&id_text)))
            .set(users::updated_at.eq(now))
            .execute(conn)
            .map_err(db_error)?;
        if found == 0 {
            return Err(Error::NotFound);
        }
        let current: BTreeSet<String> = roles_of(conn, &id_text)?.into_iter().collect();
        let wanted: BTreeSet<String> = roles.iter().map(|r| r.as_str().to_string()).collect();
        for removed in current.difference(&wanted) {
            diesel::delete(
                user_roles::table
                    .filter(user_roles::user_id.eq(&id_text))
                    .filter(user_roles::role.eq(removed)),
            )
            .execute(conn)
            .map_err(db_error)?;
            notifications::record(
                conn,
                NotificationKind::RoleRevoked,
                id,
                Some(removed.as_str()),
                now,
            )?;
        }
        for added in wanted.difference(&current) {
            add_role(conn, &id_text, added)?;
        }
        find(conn, id)?.ok_or(Error::NotFound)
    })
}
