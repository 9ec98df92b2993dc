//! Users kept by a user service (`users.source = "remote"`): the client side of its small
//! HTTP contract (`user-service-example/` implements it; the README's "User service" part
//! describes it). Every call carries this service's credentials (HTTP Basic), is bounded by
//! `users.remote_timeout` and by `users.remote_max_concurrent` calls in flight, and reads
//! at most `MAX_ANSWER_BYTES` (64 KiB). Anything but a contract answer — no connection, a
//! timeout, a 5xx, a refusal of our credentials — is [`StorageError::RemoteUnavailable`]
//! (a 503): the user service is where users are stored.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{Settings, SettingsError};
use crate::model::{Roles, User, UserId};
use crate::storage::StorageError;

/// Largest answer read from the user service.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
struct UserBody {
    id: String,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserBody> for User {
    type Error = StorageError;
    fn try_from(b: UserBody) -> Result<User, StorageError> {
        let bad = |what: &str| StorageError::RemoteUnavailable(format!("user service sent {what}"));
        Ok(User {
            id: UserId::parse(&b.id).map_err(|_| bad("a user id that is not a UUID"))?,
            username: b.username,
            email: b.email,
            roles: Roles::parse(&b.roles).map_err(|_| bad("an invalid role name"))?,
            disabled: b.disabled,
            created_at: b.created_at,
            updated_at: b.updated_at,
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: Option<String>,
}

/// What registering at the user service did.
#[derive(Debug)]
pub enum Created {
    User(User),
    /// The username or email is taken.
    Taken,
    /// The user service refused the values (its message says why).
    Refused(String),
}

/// What a password change at the user service did.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordChange {
    Changed,
    /// The current password is wrong (or the user is disabled or gone).
    InvalidCredentials,
    /// The new password breaks a rule (the message says which).
    Refused(String),
}

#[derive(Serialize)]
struct NewUserBody<'a> {
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct CredentialsBody<'a> {
    login: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct PasswordBody<'a> {
    current_password: &'a str,
    new_password: &'a str,
}

/// The user service's client. Cheap to clone.
#[derive(Clone)]
pub struct UserService {
    http: reqwest::Client,
    base: Arc<str>,
    authorization: HeaderValue,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for UserService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserService")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl UserService {
    /// The client `users.*` describe; `None` when users are local.
    pub fn from_settings(settings: &Settings) -> Result<Option<UserService>, SettingsError> {
        let u = &settings.users;
        if u.source != crate::config::UserSource::Remote {
            return Ok(None);
        }
        let base = u
            .remote_url
            .as_deref()
            .ok_or_else(|| SettingsError("users.remote_url: required".into()))?
            .trim_end_matches('/');
        let secret = settings.users_remote_secret()?;
        let timeout = u.remote_timeout.get();
        // Bodies carry passwords: never re-sent to wherever a redirect points, never
        // through a proxy from the environment.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SettingsError(format!("users.remote_url: {e}")))?;
        Ok(Some(UserService {
            http,
            base: Arc::from(base),
            authorization: basic(&u.remote_client_id, &secret)?,
            slots: Arc::new(Semaphore::new(u.remote_max_concurrent)),
            timeout,
        }))
    }

    /// Registers a user.
    pub async fn create(
        &self,
        username: &str,
        password: &SecretString,
        email: Option<&str>,
    ) -> Result<Created, StorageError> {
        let body = NewUserBody {
            username,
            password: password.expose_secret(),
            email,
        };
        let (status, bytes) = self
            .call(reqwest::Method::POST, "/v1/users", Some(&body))
            .await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => Ok(Created::User(user_from(&bytes)?)),
            StatusCode::CONFLICT => Ok(Created::Taken),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Ok(Created::Refused(message_from(&bytes)))
            }
            other => Err(unexpected(other)),
        }
    }

    /// The enabled user these credentials belong to; `None` for an unknown login, a wrong
    /// password and a disabled user alike.
    pub async fn verify_credentials(
        &self,
        login: &str,
        password: &SecretString,
    ) -> Result<Option<User>, StorageError> {
        let body = CredentialsBody {
            login,
            password: password.expose_secret(),
        };
        let (status, bytes) = self
            .call(reqwest::Method::POST, "/v1/credentials/verify", Some(&body))
            .await?;
        match status {
            StatusCode::OK => Ok(Some(user_from(&bytes)?)),
            // A malformed login (too long, odd characters) matches nobody either.
            StatusCode::UNAUTHORIZED if is_code(&bytes, "invalid_credentials") => Ok(None),
            StatusCode::BAD_REQUEST => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// The user with this id as it is now (disabled ones too); `None` if there is none.
    pub async fn find(&self, id: &UserId) -> Result<Option<User>, StorageError> {
        let path = format!("/v1/users/{id}");
        let (status, bytes) = self.call::<()>(reqwest::Method::GET, &path, None).await?;
        match status {
            StatusCode::OK => Ok(Some(user_from(&bytes)?)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Changes a password after the user service checked the current one.
    pub async fn change_password(
        &self,
        id: &UserId,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<PasswordChange, StorageError> {
        let path = format!("/v1/users/{id}/password");
        let body = PasswordBody {
            current_password: current.expose_secret(),
            new_password: new.expose_secret(),
        };
        let (status, bytes) = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(PasswordChange::Changed),
            StatusCode::UNAUTHORIZED if is_code(&bytes, "invalid_credentials") => {
                Ok(PasswordChange::InvalidCredentials)
            }
            StatusCode::NOT_FOUND => Ok(PasswordChange::InvalidCredentials),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Ok(PasswordChange::Refused(message_from(&bytes)))
            }
            other => Err(unexpected(other)),
        }
    }

    /// One call: a slot, the request, and the answer's status and (bounded) body.
    async fn call<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Vec<u8>), StorageError> {
        let _slot = tokio::time::timeout(self.timeout, self.slots.acquire())
            .await
            .map_err(|_| StorageError::RemoteUnavailable("too many calls in flight".into()))?
            .map_err(|_| StorageError::RemoteUnavailable("closed".into()))?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        // Errors name the URL at most; bodies (which hold passwords) are never in them.
        let mut response = request
            .send()
            .await
            .map_err(|e| StorageError::RemoteUnavailable(describe(e)))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| StorageError::RemoteUnavailable(describe(e)))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(StorageError::RemoteUnavailable(
                    "user service answer too large".into(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, bytes))
    }
}

/// `Basic …` of the form-encoded id and secret (RFC 6749 2.3.1), marked sensitive.
fn basic(id: &str, secret: &SecretString) -> Result<HeaderValue, SettingsError> {
    use base64::Engine;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let pair = format!(
        "{}:{}",
        utf8_percent_encode(id, NON_ALPHANUMERIC),
        utf8_percent_encode(secret.expose_secret(), NON_ALPHANUMERIC)
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| SettingsError("users.remote_secret: cannot be sent in a header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "user service did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to the user service".into()
    } else {
        format!("user service call failed: {}", e.without_url())
    }
}

fn unexpected(status: StatusCode) -> StorageError {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        StorageError::RemoteUnavailable(format!(
            "user service refused this service's credentials ({status}); check users.remote_client_id and users.remote_secret"
        ))
    } else {
        StorageError::RemoteUnavailable(format!("user service answered {status}"))
    }
}

fn user_from(bytes: &[u8]) -> Result<User, StorageError> {
    serde_json::from_slice::<UserBody>(bytes)
        .map_err(|_| {
            StorageError::RemoteUnavailable("user service sent an unreadable user".into())
        })?
        .try_into()
}

fn is_code(bytes: &[u8], code: &str) -> bool {
    serde_json::from_slice::<ErrorBody>(bytes).is_ok_and(|b| b.error == code)
}

fn message_from(bytes: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(ErrorBody {
            message: Some(m), ..
        }) if !m.is_empty() => m.chars().take(200).collect(),
        Ok(ErrorBody { error, .. }) => error.chars().take(64).collect(),
        Err(_) => "refused by the user service".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_and_sensitive() {
        let v = basic("auth service", &SecretString::from("a:b%c".to_string())).unwrap();
        assert!(v.is_sensitive());
        use base64::Engine;
        let raw = v
            .to_str()
            .unwrap()
            .strip_prefix("Basic ")
            .unwrap()
            .to_string();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        assert_eq!(decoded, b"auth%20service:a%3Ab%25c");
    }

    #[test]
    fn users_from_the_service_are_checked() {
        let good = br#"{"id":"9b2f7c2e-3f1a-4c6e-8d7b-2a1e0f9c8b7a","username":"alice","email":null,"roles":["user","admin"],"disabled":false,"created_at":1,"updated_at":2}"#;
        let user = user_from(good).unwrap();
        assert!(user.roles.is_admin());
        let bad_id = br#"{"id":"7","username":"a","email":null,"roles":[],"disabled":false,"created_at":1,"updated_at":2}"#;
        assert!(user_from(bad_id).is_err());
        let bad_role = br#"{"id":"9b2f7c2e-3f1a-4c6e-8d7b-2a1e0f9c8b7a","username":"a","email":null,"roles":["Bad Role"],"disabled":false,"created_at":1,"updated_at":2}"#;
        assert!(user_from(bad_role).is_err());
        assert!(user_from(b"<html>").is_err());
    }

    #[test]
    fn refusal_messages_are_bounded() {
        let long = format!(
            r#"{{"error":"weak_password","message":"{}"}}"#,
            "x".repeat(500)
        );
        assert_eq!(message_from(long.as_bytes()).len(), 200);
        assert_eq!(
            message_from(br#"{"error":"weak_password"}"#),
            "weak_password"
        );
        assert_eq!(message_from(b"nope"), "refused by the user service");
    }
}
