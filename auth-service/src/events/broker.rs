//! The NATS JetStream adapter: connecting (credentials taken out of `events.url`), making
//! sure the stream exists, and publishing one event and waiting for its acknowledgement.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};

use crate::config::{BrokerUrl, EventsSettings};

/// How long the broker keeps event ids to drop a re-published event.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    #[error("not connected to the broker (reconnecting)")]
    Disconnected,
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("publishing event {event_id}: {message}")]
    Publish { event_id: String, message: String },
    #[error("sending the heartbeat: {0}")]
    Heartbeat(String),
}

impl BrokerError {
    /// The `stage` label of the relay-errors metric.
    pub fn stage(&self) -> &'static str {
        match self {
            BrokerError::Connect(_) | BrokerError::Disconnected => "connect",
            BrokerError::Stream { .. } => "stream",
            BrokerError::Publish { .. } => "publish",
            BrokerError::Heartbeat(_) => "heartbeat",
        }
    }
}

/// What the broker said to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// Stored now.
    Stored,
    /// It had an event with this id already (within the duplicate window).
    Duplicate,
}

/// A connection with the stream known to exist. The client reconnects by itself; the stream
/// is checked again after any failed publish (it may have been deleted).
pub struct Broker {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_ready: bool,
}

impl Broker {
    pub async fn connect(url: &BrokerUrl, timeout: Duration) -> Result<Broker, BrokerError> {
        let (servers, credentials) = split_credentials(url.expose());
        let mut options = async_nats::ConnectOptions::new()
            .name("auth-service events relay")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => log::info!("events broker: connected"),
                    other => log::warn!("events broker: {other}"),
                }
            });
        options = match credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
        };
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(|e| BrokerError::Connect(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        // The wait for each publish acknowledgement (and for stream requests).
        js.set_timeout(timeout);
        Ok(Broker {
            client,
            js,
            stream_ready: false,
        })
    }

    /// Creates the stream if it does not exist: file storage, the subjects below the prefix,
    /// a duplicate window of [`DUPLICATE_WINDOW`], and the limits `events.max_age` and
    /// `events.max_bytes` (the oldest events discarded first). An existing stream is used with
    /// the limits it has (the operator's), as long as it takes the relay's subjects: one that
    /// does not would refuse every event, so it is an error, checked again on the next pass.
    pub async fn ensure_stream(&mut self, settings: &EventsSettings) -> Result<(), BrokerError> {
        if self.stream_ready {
            return Ok(());
        }
        self.check_connected()?;
        let subjects = format!("{}.>", settings.subject_prefix);
        let config = stream_config(settings);
        let stream =
            self.js
                .get_or_create_stream(config)
                .await
                .map_err(|e| BrokerError::Stream {
                    stream: settings.stream.clone(),
                    message: e.to_string(),
                })?;
        let existing = &stream.cached_info().config;
        if !existing
            .subjects
            .iter()
            .any(|s| subject_covers(s, &subjects))
        {
            return Err(BrokerError::Stream {
                stream: settings.stream.clone(),
                message: format!(
                    "it exists with subjects {:?}, which do not take {subjects}; events wait in \
                     the outbox until it does",
                    existing.subjects
                ),
            });
        }
        if existing.max_age.is_zero() && existing.max_bytes < 0 && existing.max_messages < 0 {
            log::warn!(
                "events: stream {} exists without any limit and grows for ever; set one with \
                 the nats CLI (events.max_age applies only to a stream this service creates)",
                settings.stream
            );
        }
        self.stream_ready = true;
        Ok(())
    }

    /// Sends a heartbeat with core NATS (not into the stream): `payload` on `subject`, and
    /// waits until the server has it.
    pub async fn heartbeat(&self, subject: String, payload: String) -> Result<(), BrokerError> {
        self.check_connected()?;
        let failed = |message: String| BrokerError::Heartbeat(message);
        self.client
            .publish(subject, payload.into())
            .await
            .map_err(|e| failed(e.to_string()))?;
        self.client.flush().await.map_err(|e| failed(e.to_string()))
    }

    /// Publishes one event with `Nats-Msg-Id: event_id` and waits for the acknowledgement.
    pub async fn publish(
        &mut self,
        subject: String,
        event_id: &str,
        payload: String,
    ) -> Result<Acked, BrokerError> {
        let failed = |message: String| BrokerError::Publish {
            event_id: event_id.to_string(),
            message,
        };
        let sent = self
            .js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(event_id),
            )
            .await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) if ack.duplicate => Ok(Acked::Duplicate),
            Ok(_) => Ok(Acked::Stored),
            Err(e) => {
                self.stream_ready = false;
                Err(failed(e.to_string()))
            }
        }
    }

    /// Fails at once while the client is between connections, instead of queueing a publish
    /// that would only time out.
    pub fn check_connected(&self) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(BrokerError::Disconnected),
        }
    }

    /// Sends what is buffered and closes the connection.
    pub async fn close(self) {
        let _ = self.client.drain().await;
    }
}

/// The stream as the relay creates it.
fn stream_config(settings: &EventsSettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: settings.max_age.get(),
        max_bytes: settings
            .max_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// Whether the stream subject filter `filter` takes every subject that `subjects` (literal
/// tokens, possibly ending in `>`) names.
fn subject_covers(filter: &str, subjects: &str) -> bool {
    let mut filter = filter.split('.');
    let mut subjects = subjects.split('.');
    loop {
        match (filter.next(), subjects.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some(f), Some(s)) if f == "*" || f == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
}

/// The server URLs without user info, and the credentials of the first URL that has them
/// (`user:password@` or `token@`). The client takes credentials as options, and URLs with a
/// password in them must never reach an error message or a log line.
fn split_credentials(urls: &str) -> (Vec<String>, Credentials) {
    let mut credentials = Credentials::None;
    let servers = urls
        .split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_string();
            };
            let Some((userinfo, host)) = rest.rsplit_once('@') else {
                return url.to_string();
            };
            if matches!(credentials, Credentials::None) {
                credentials = match userinfo.split_once(':') {
                    Some((user, password)) => {
                        Credentials::UserPassword(user.to_string(), password.to_string())
                    }
                    None => Credentials::Token(userinfo.to_string()),
                };
            }
            format!("{scheme}://{host}")
        })
        .collect();
    (servers, credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_must_take_the_relays_subjects() {
        for filter in ["auth.events.>", "auth.>", ">", "*.events.>", "auth.*.>"] {
            assert!(subject_covers(filter, "auth.events.>"), "{filter}");
        }
        for filter in [
            "auth.events",
            "auth.events.*",
            "auth.events.logged_out",
            "other.>",
            "auth.events-x.>",
            "auth",
        ] {
            assert!(!subject_covers(filter, "auth.events.>"), "{filter}");
        }
    }

    #[test]
    fn a_created_stream_is_bounded() {
        let mut settings = EventsSettings::default();
        let config = stream_config(&settings);
        assert_eq!(config.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(config.max_bytes, -1);
        assert_eq!(config.discard, stream::DiscardPolicy::Old);
        assert_eq!(config.subjects, ["auth.events.>"]);
        settings.max_bytes = Some(1 << 30);
        assert_eq!(stream_config(&settings).max_bytes, 1 << 30);
    }

    #[test]
    fn credentials_leave_the_urls() {
        let (servers, credentials) =
            split_credentials("nats://relay:pw@a:4222,nats://b:4222,tls://tok@c:4222");
        assert_eq!(servers, ["nats://a:4222", "nats://b:4222", "tls://c:4222"]);
        assert!(
            matches!(credentials, Credentials::UserPassword(u, p) if u == "relay" && p == "pw")
        );
        let (servers, credentials) = split_credentials("nats://s3cret@a:4222");
        assert_eq!(servers, ["nats://a:4222"]);
        assert!(matches!(credentials, Credentials::Token(t) if t == "s3cret"));
        let (servers, credentials) = split_credentials("nats://a:4222");
        assert_eq!(servers, ["nats://a:4222"]);
        assert!(matches!(credentials, Credentials::None));
    }
}
