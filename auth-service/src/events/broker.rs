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
}

impl BrokerError {
    /// The `stage` label of the relay-errors metric.
    pub fn stage(&self) -> &'static str {
        match self {
            BrokerError::Connect(_) | BrokerError::Disconnected => "connect",
            BrokerError::Stream { .. } => "stream",
            BrokerError::Publish { .. } => "publish",
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
    /// a duplicate window of [`DUPLICATE_WINDOW`]. An existing stream is used as it is.
    pub async fn ensure_stream(&mut self, settings: &EventsSettings) -> Result<(), BrokerError> {
        if self.stream_ready {
            return Ok(());
        }
        self.check_connected()?;
        let subjects = format!("{}.>", settings.subject_prefix);
        let config = stream::Config {
            name: settings.stream.clone(),
            subjects: vec![subjects.clone()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let stream =
            self.js
                .get_or_create_stream(config)
                .await
                .map_err(|e| BrokerError::Stream {
                    stream: settings.stream.clone(),
                    message: e.to_string(),
                })?;
        let existing = &stream.cached_info().config;
        if !existing.subjects.iter().any(|s| s == &subjects || s == ">") {
            log::warn!(
                "events: stream {} exists with subjects {:?}, not {subjects}; events to \
                 subjects it does not take are refused",
                settings.stream,
                existing.subjects
            );
        }
        self.stream_ready = true;
        Ok(())
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
