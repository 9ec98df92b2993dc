//! Delivers the `notifications` outbox to the auth service's `POST /internal/user-events`,
//! oldest first, one at a time. A row is deleted only after a 2xx answer; any other outcome
//! (connection refused, timeout, 401, 5xx) leaves it in place and the sender backs off
//! (100 ms doubling to 5 s) and tries the same row again, so an auth outage or a restart of
//! this service loses nothing and order is kept. Duplicates are possible (a 2xx whose delete
//! failed); the auth service recognises them by the event id.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderValue;
use tokio::sync::Notify;

use crate::error::{Error, cause_chain};
use crate::model::Notification;
use crate::settings::Credential;
use crate::storage::{Store, notifications};

/// The path on the auth service's internal listener.
pub const EVENTS_PATH: &str = "/internal/user-events";
const BATCH: i64 = 100;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What is form-encoded in a Basic credential: all but the unreserved characters.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `Basic base64(urlenc(id):urlenc(secret))` (RFC 6749 2.3.1), marked sensitive.
pub fn basic_header(credential: &Credential) -> Result<HeaderValue, String> {
    use base64::Engine;
    let pair = format!(
        "{}:{}",
        utf8_percent_encode(&credential.id, FORM),
        utf8_percent_encode(&credential.secret, FORM)
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "auth.client_secret: not usable in a header".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("storage: {}", cause_chain(.0))]
    Storage(#[from] Error),
    #[error("the auth service is unreachable: {}", cause_chain(.0))]
    Unreachable(#[from] reqwest::Error),
    #[error(
        "the auth service refused this service's client credentials (401; auth.client_id = \
         {client_id:?}): check auth.client_secret and that the client has the user_events \
         permission"
    )]
    Refused { client_id: String },
    #[error("the auth service answered {0}")]
    Status(reqwest::StatusCode),
}

/// The background sender.
pub struct Sender {
    store: Store,
    client: reqwest::Client,
    url: String,
    client_id: String,
    authorization: HeaderValue,
    wake: Arc<Notify>,
    poll_interval: Duration,
}

impl Sender {
    pub fn new(
        store: Store,
        wake: Arc<Notify>,
        auth_url: &str,
        credential: &Credential,
        timeout: Duration,
        poll_interval: Duration,
    ) -> Result<Sender, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("auth.url: cannot build an HTTP client: {e}"))?;
        Ok(Sender {
            store,
            client,
            url: format!("{}{EVENTS_PATH}", auth_url.trim_end_matches('/')),
            client_id: credential.id.clone(),
            authorization: basic_header(credential)?,
            wake,
            poll_interval,
        })
    }

    /// Runs until the process ends.
    pub async fn run(self) {
        log::info!("delivering user notifications to {}", self.url);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.pass().await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    // A commit's `notify_one` while a pass ran is kept as a permit, so it is
                    // not missed here.
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.poll_interval) => {}
                    }
                }
                Err(e) => {
                    log::warn!(
                        "user notification not delivered, retrying in {}: {e}",
                        humantime::format_duration(backoff)
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Delivers everything pending, oldest first; stops at the first failure.
    async fn pass(&self) -> Result<(), DeliveryError> {
        loop {
            let batch = self
                .store
                .run(|conn| notifications::pending(conn, BATCH))
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            for n in batch {
                let outcome = self.deliver(&n).await?;
                let seq = n.seq;
                self.store
                    .run(move |conn| notifications::delete(conn, seq))
                    .await?;
                match outcome {
                    Delivered::Accepted => log::info!(
                        "delivered {} notification {} for user {}",
                        n.kind,
                        n.id,
                        n.user_id
                    ),
                    Delivered::Rejected(status) => log::error!(
                        "auth service refused {} notification {} for user {} for good ({status}); dropped so the ones after it go on",
                        n.kind,
                        n.id,
                        n.user_id
                    ),
                }
            }
        }
    }

    /// Sends one notification. A 2xx is accepted; a refusal that repeating cannot change
    /// (the auth service found the notification itself wrong: 400, 404, 409, 410, 413, 415,
    /// 422) is `Rejected`, so it does not hold back the ones after it; anything else (no
    /// answer, 401, 403, 408, 429, 5xx) is an error, and the same row is tried again.
    async fn deliver(&self, n: &Notification) -> Result<Delivered, DeliveryError> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .json(n)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            Ok(Delivered::Accepted)
        } else if permanent(status) {
            Ok(Delivered::Rejected(status))
        } else if status == reqwest::StatusCode::UNAUTHORIZED {
            Err(DeliveryError::Refused {
                client_id: self.client_id.clone(),
            })
        } else {
            Err(DeliveryError::Status(status))
        }
    }
}

/// What became of one notification.
enum Delivered {
    Accepted,
    Rejected(reqwest::StatusCode),
}

/// Refusals of the notification itself, which sending it again cannot change.
fn permanent(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 409 | 410 | 413 | 415 | 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_notification_itself_are_permanent() {
        for s in [400, 404, 409, 410, 413, 415, 422] {
            assert!(permanent(reqwest::StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [401, 403, 405, 408, 429, 500, 502, 503, 504] {
            assert!(!permanent(reqwest::StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        use base64::Engine;
        let value = basic_header(&Credential {
            id: "user-service".into(),
            secret: "a:b c/d+é".into(),
        })
        .unwrap();
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "user-service:a%3Ab%20c%2Fd%2B%C3%A9"
        );
    }

    #[test]
    fn the_wire_shape_omits_a_missing_role() {
        let n = Notification {
            seq: 7,
            id: "e".into(),
            kind: "user_disabled".into(),
            user_id: "u".into(),
            role: None,
            at: 5,
        };
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!({"id":"e","kind":"user_disabled","user_id":"u","at":5})
        );
    }
}
