//! The user operations. Changes the auth service must hear about (a user disabled, a role
//! taken away, a password changed) commit their notification with the change and then wake
//! the sender.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::Notify;

use crate::domain::validation::{MAX_EMAIL_CHARS, normalize_email, validate_username};
use crate::error::Error;
use crate::model::{User, UserId, now, role_set};
use crate::passwords::{Passwords, check_strength};
use crate::storage::{Store, users};

/// Most users one page of the admin list holds.
pub const MAX_PAGE: u32 = 200;

/// A registration request.
pub struct Registration {
    pub username: String,
    pub email: Option<String>,
    pub password: SecretString,
}

/// One page of users.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    pub users: Vec<User>,
    /// The `offset` of the next page; `null` on the last one.
    pub next_offset: Option<u64>,
}

/// The user operations over one store and one hashing pool. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    store: Store,
    passwords: Passwords,
    /// Woken after a commit that wrote a notification.
    outbox: Arc<Notify>,
}

impl Users {
    pub fn new(store: Store, passwords: Passwords) -> Users {
        Users {
            store,
            passwords,
            outbox: Arc::new(Notify::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What the notification sender waits on.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox.clone()
    }

    /// Creates a user with the `user` role and `extra_roles`. A taken username (in any case)
    /// or email is [`Error::UsernameTaken`].
    pub async fn register(&self, r: Registration, extra_roles: &[String]) -> Result<User, Error> {
        validate_username(&r.username)?;
        let email = r.email.as_deref().map(normalize_email).transpose()?;
        check_strength(&r.password)?;
        let roles = role_set(extra_roles).map_err(Error::InvalidRequest)?;
        let hash = self.passwords.hash(r.password).await?;
        let username = r.username;
        let user = self
            .store
            .run(move |conn| {
                users::insert(
                    conn,
                    &users::NewUser {
                        id: UserId::random(),
                        username: &username,
                        email: email.as_deref(),
                        password_hash: &hash,
                        roles: &roles,
                        now: now(),
                    },
                )
            })
            .await?;
        log::info!("registered user {}", user.id);
        Ok(user)
    }

    /// The enabled user whose username or email is `login` and whose password this is.
    /// Unknown login, wrong password and disabled user are all [`Error::InvalidCredentials`],
    /// each after one Argon2id check.
    pub async fn verify_credentials(
        &self,
        login: String,
        password: SecretString,
    ) -> Result<User, Error> {
        let found = if login.is_empty() || login.chars().count() > MAX_EMAIL_CHARS {
            None
        } else {
            self.store
                .run(move |conn| users::find_by_login(conn, &login))
                .await?
        };
        let (user, stored) = match found {
            Some(c) => (Some(c.user), Some(c.password_hash)),
            None => (None, None),
        };
        let matches = self.passwords.verify(password, stored).await?;
        match user {
            Some(user) if matches && !user.disabled => Ok(user),
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// A user, disabled or not.
    pub async fn get(&self, id: UserId) -> Result<User, Error> {
        self.store
            .run(move |conn| users::find(conn, id))
            .await?
            .ok_or(Error::NotFound)
    }

    /// Sets a new password after checking the current one (the auth service's call; it ends
    /// the user's other sessions itself, so nothing is reported back).
    pub async fn change_password(
        &self,
        id: UserId,
        current: SecretString,
        new: SecretString,
    ) -> Result<(), Error> {
        let found = self
            .store
            .run(move |conn| users::find_credentials(conn, id))
            .await?
            .ok_or(Error::NotFound)?;
        check_strength(&new)?;
        let matches = self
            .passwords
            .verify(current, Some(found.password_hash.clone()))
            .await?;
        if !matches || found.user.disabled {
            return Err(Error::InvalidCredentials);
        }
        let new_hash = self.passwords.hash(new).await?;
        let old_hash = found.password_hash;
        self.store
            .run(move |conn| users::set_password(conn, id, &old_hash, &new_hash, now()))
            .await?;
        self.outbox.notify_one();
        log::info!("password changed for user {id}");
        Ok(())
    }

    /// Users in registration order.
    pub async fn list(&self, limit: u32, offset: u64) -> Result<Page, Error> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::InvalidRequest(format!("limit: 1 to {MAX_PAGE}")));
        }
        let off =
            i64::try_from(offset).map_err(|_| Error::InvalidRequest("offset: too large".into()))?;
        let (users, more) = self
            .store
            .run(move |conn| users::list(conn, i64::from(limit), off))
            .await?;
        let next_offset = more.then(|| offset + u64::from(limit));
        Ok(Page { users, next_offset })
    }

    /// Disables (notifying `user_disabled`) or enables a user. Repeating it changes nothing.
    pub async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<User, Error> {
        let (user, changed) = self
            .store
            .run(move |conn| users::set_disabled(conn, id, disabled, now()))
            .await?;
        if changed {
            if disabled {
                self.outbox.notify_one();
            }
            log::info!(
                "user {id} {}",
                if disabled { "disabled" } else { "enabled" }
            );
        }
        Ok(user)
    }

    /// Replaces a user's roles (`user` is always kept); notifies `role_revoked` for each role
    /// taken away.
    pub async fn set_roles(&self, id: UserId, names: Vec<String>) -> Result<User, Error> {
        let roles = role_set(&names).map_err(Error::InvalidRequest)?;
        let user = self
            .store
            .run(move |conn| users::set_roles(conn, id, &roles, now()))
            .await?;
        self.outbox.notify_one();
        log::info!("roles of user {id} set to {}", user.roles.join(","));
        Ok(user)
    }
}
