//! The relay: a background task that, while its replica holds the relay lease, reads the
//! outbox in `seq` order, publishes each event and waits for the broker's acknowledgement
//! before the next, then deletes exactly the acknowledged rows.
//!
//! While events flow (it holds the lease, its last pass worked, and the outbox is drained or
//! its oldest row younger than [`STALE_AFTER_SECS`]), it also sends a heartbeat every
//! [`HEARTBEAT_EVERY`] with core NATS, outside the stream, on `<subject_prefix>-heartbeat`:
//! `{"at":<unix s>,"stream":"<events.stream>"}`. Consumers that drop cached answers on events
//! stop trusting their cache when heartbeats stop: the relay stopped, crashed, cannot publish,
//! or publishes where they do not listen.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::{BrokerUrl, EventsSettings, Settings};
use crate::events::broker::{Acked, Broker, BrokerError};
use crate::metrics::Metrics;
use crate::storage::outbox::{self, OutboxRow};
use crate::storage::{Database, StorageError};

/// Longest pause between attempts while the broker (or the database) fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often a replica that does not hold the lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// How often the outbox is counted for the depth gauge while events flow.
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// How often the relay says, outside the stream, that events flow.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// An outbox whose oldest row waits longer than this (in whole seconds) is behind: no
/// heartbeat until it has caught up.
pub const STALE_AFTER_SECS: i64 = 5;

/// The subject of the relay's heartbeats: beside the stream's `<prefix>.>`, not below it,
/// so the stream never stores them.
pub fn heartbeat_subject(subject_prefix: &str) -> String {
    format!("{subject_prefix}-heartbeat")
}

/// The running relay; stopping it releases the lease so another replica can take over at
/// once.
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Asks the relay to stop (it releases the lease on its way out).
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the relay and waits for it, at most `within`.
    pub async fn stop(self, within: Duration) {
        self.signal_stop();
        let _ = tokio::time::timeout(within, self.task).await;
    }
}

/// Starts the relay when events are on (`events.url` set).
pub fn spawn_relay(
    settings: &Settings,
    db: Database,
    metrics: Arc<Metrics>,
) -> Option<RelayHandle> {
    let url = settings.events.url.clone()?;
    let (stop, stopped) = watch::channel(false);
    let relay = Relay::new(url, settings.events.clone(), db, metrics);
    log::info!(
        "events: relaying the outbox to {} (stream {}, subjects {}.>) as {}",
        relay.url.redacted(),
        relay.settings.stream,
        relay.settings.subject_prefix,
        relay.holder
    );
    let task = tokio::spawn(relay.run(stopped));
    Some(RelayHandle { stop, task })
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the outbox: {0}")]
    Storage(#[from] StorageError),
}

impl RelayError {
    fn stage(&self) -> &'static str {
        match self {
            RelayError::Broker(e) => e.stage(),
            RelayError::Storage(_) => "storage",
        }
    }
}

/// How a pass ended, and so how long to wait before the next.
#[derive(Debug)]
enum Pass {
    /// The batch was full: more may wait. `oldest_at`: when the first row of the batch was
    /// written (Unix seconds).
    More { oldest_at: i64 },
    /// The outbox is empty (as far as this pass saw).
    Idle,
    /// Another replica relays.
    NotHolder,
}

struct Relay {
    url: BrokerUrl,
    settings: EventsSettings,
    db: Database,
    metrics: Arc<Metrics>,
    /// Who this relay is in the lease row: the host and a random id per process.
    holder: String,
    /// How long a taken lease lasts: long enough for one publish to time out twice.
    lease: Duration,
    /// Until when (by this process's clock) the lease is surely ours.
    lease_until: Option<Instant>,
    broker: Option<Broker>,
    last_count: Option<Instant>,
    last_heartbeat: Option<Instant>,
}

impl Relay {
    fn new(url: BrokerUrl, settings: EventsSettings, db: Database, metrics: Arc<Metrics>) -> Relay {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let lease = Duration::from_secs(10)
            .max(settings.publish_timeout.get() * 2 + Duration::from_secs(2));
        Relay {
            url,
            holder: format!("{host}/{}", uuid::Uuid::new_v4().simple()),
            lease,
            settings,
            db,
            metrics,
            lease_until: None,
            broker: None,
            last_count: None,
            last_heartbeat: None,
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            if *stop.borrow() {
                break;
            }
            // Stopping abandons a pass in flight: an event acknowledged but not yet deleted
            // is published again later, and recognised by its id.
            let outcome = tokio::select! {
                outcome = self.pass() => outcome,
                _ = stop.changed() => break,
            };
            let wait = match outcome {
                Ok(pass) => {
                    if failing {
                        log::info!("events: relaying again");
                        failing = false;
                    }
                    backoff = FIRST_BACKOFF;
                    if vouches(&pass, unix_now()) {
                        self.heartbeat().await;
                    }
                    match pass {
                        Pass::More { .. } => Duration::ZERO,
                        // At least one look per heartbeat: each vouches for a fresh one.
                        Pass::Idle => self.settings.poll_interval.get().min(HEARTBEAT_EVERY),
                        Pass::NotHolder => LEASE_RETRY,
                    }
                }
                Err(e) => {
                    self.metrics
                        .events_relay_errors
                        .with_label_values(&[e.stage()])
                        .inc();
                    // Once per outage at warn level, then quietly while it lasts.
                    if failing {
                        log::debug!("events: {e}; retrying in {backoff:?}");
                    } else {
                        log::warn!("events: {e}; events wait in the outbox, retrying");
                        failing = true;
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => break,
                }
            }
        }
        self.release().await;
        if let Some(broker) = self.broker.take() {
            broker.close().await;
        }
        log::info!("events: relay stopped");
    }

    async fn pass(&mut self) -> Result<Pass, RelayError> {
        if !self.hold_lease().await? {
            self.broker = None;
            self.count_depth(None).await?;
            return Ok(Pass::NotHolder);
        }
        // Connected, with the stream checked, on every pass, events or not: a heartbeat after
        // the pass vouches for both.
        let mut broker = match self.broker.take() {
            Some(broker) => broker,
            None => match Broker::connect(&self.url, self.settings.publish_timeout.get()).await {
                Ok(broker) => broker,
                Err(e) => {
                    // The depth gauge shows what waits while the broker is away.
                    self.count_depth(None).await?;
                    return Err(e.into());
                }
            },
        };
        let outcome = self.pass_on(&mut broker).await;
        self.broker = Some(broker);
        outcome
    }

    async fn pass_on(&mut self, broker: &mut Broker) -> Result<Pass, RelayError> {
        let ready = match broker.check_connected() {
            Ok(()) => broker.ensure_stream(&self.settings).await,
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            self.count_depth(None).await?;
            return Err(e.into());
        }
        let batch = self.settings.batch_size;
        let rows = self.db.run(move |c| outbox::oldest(c, batch)).await?;
        let Some(oldest_at) = rows.first().map(|row| row.created_at) else {
            self.metrics.events_outbox_depth.set(0);
            return Ok(Pass::Idle);
        };
        let mut acked = Vec::with_capacity(rows.len());
        let failure = self.publish_on(broker, &rows, &mut acked).await.err();
        if !acked.is_empty() {
            let seqs = acked.clone();
            self.db.write(move |c| outbox::delete(c, &seqs)).await?;
        }
        let full = rows.len() >= batch as usize;
        self.count_depth((!full).then_some(rows.len() - acked.len()))
            .await?;
        match failure {
            Some(e) => Err(e),
            None if full => Ok(Pass::More { oldest_at }),
            None => Ok(Pass::Idle),
        }
    }

    async fn publish_on(
        &self,
        broker: &mut Broker,
        rows: &[OutboxRow],
        acked: &mut Vec<i64>,
    ) -> Result<(), RelayError> {
        let margin = self.settings.publish_timeout.get();
        for row in rows {
            if self
                .lease_until
                .is_none_or(|until| Instant::now() + margin >= until)
            {
                break;
            }
            broker.check_connected()?;
            let subject = format!("{}.{}", self.settings.subject_prefix, row.subject);
            let result = broker
                .publish(subject, &row.event_id, row.payload.clone())
                .await?;
            let label = match result {
                Acked::Stored => "stored",
                Acked::Duplicate => "duplicate",
            };
            self.metrics
                .events_published
                .with_label_values(&[label])
                .inc();
            acked.push(row.seq);
        }
        Ok(())
    }

    /// Sends a heartbeat when one is due. A failure is counted and logged quietly: the
    /// missing heartbeat is what consumers notice.
    async fn heartbeat(&mut self) {
        if self
            .last_heartbeat
            .is_some_and(|at| at.elapsed() < HEARTBEAT_EVERY)
        {
            return;
        }
        let Some(broker) = &self.broker else {
            return;
        };
        let subject = heartbeat_subject(&self.settings.subject_prefix);
        let payload = serde_json::json!({"at": unix_now(), "stream": self.settings.stream});
        let sent = tokio::time::timeout(
            self.settings.publish_timeout.get(),
            broker.heartbeat(subject, payload.to_string()),
        )
        .await
        .unwrap_or_else(|_| Err(BrokerError::Heartbeat("timed out".into())));
        match sent {
            Ok(()) => self.last_heartbeat = Some(Instant::now()),
            Err(e) => {
                self.metrics
                    .events_relay_errors
                    .with_label_values(&[e.stage()])
                    .inc();
                log::debug!("events: {e}");
            }
        }
    }

    /// Takes or renews the lease when less than half of it is left. Returns whether this
    /// relay holds it.
    async fn hold_lease(&mut self) -> Result<bool, RelayError> {
        let now = Instant::now();
        if let Some(until) = self.lease_until
            && until.saturating_duration_since(now) > self.lease / 2
        {
            return Ok(true);
        }
        let (holder, lease) = (self.holder.clone(), self.lease);
        let unix = unix_now();
        let until = unix.saturating_add(i64::try_from(lease.as_secs()).unwrap_or(i64::MAX));
        let held = self
            .db
            .write(move |c| outbox::take_lease(c, &holder, unix, until))
            .await;
        match held {
            Ok(true) => {
                if self.lease_until.is_none() {
                    log::info!("events: took the relay lease");
                }
                // A second short of what was written: the row counts whole seconds.
                self.lease_until = Some(now + lease - Duration::from_secs(1));
                Ok(true)
            }
            Ok(false) => {
                self.lease_until = None;
                Ok(false)
            }
            Err(e) => {
                // Unknown whether it was renewed: publish nothing until it is.
                self.lease_until = None;
                Err(e.into())
            }
        }
    }

    /// Sets the depth gauge: `known` when the pass saw the whole outbox, else a count (at
    /// most once per [`COUNT_EVERY`]).
    async fn count_depth(&mut self, known: Option<usize>) -> Result<(), RelayError> {
        let depth = match known {
            Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
            None => {
                if self.last_count.is_some_and(|at| at.elapsed() < COUNT_EVERY) {
                    return Ok(());
                }
                self.last_count = Some(Instant::now());
                self.db.run(outbox::depth).await?
            }
        };
        self.metrics.events_outbox_depth.set(depth);
        Ok(())
    }

    /// Gives the lease up if this relay holds it.
    async fn release(&mut self) {
        if self.lease_until.take().is_none() {
            return;
        }
        let holder = self.holder.clone();
        match self
            .db
            .write(move |c| outbox::release_lease(c, &holder))
            .await
        {
            Ok(()) => log::info!("events: released the relay lease"),
            Err(e) => log::warn!("events: releasing the relay lease failed (it expires): {e}"),
        }
    }
}

/// Whether a pass that ended so shows events flowing: this relay holds the lease, the pass
/// worked, and what it found waiting was not older than [`STALE_AFTER_SECS`] (a drained
/// outbox, or a full batch whose first row is recent). `unix_now`: the time now.
fn vouches(pass: &Pass, unix_now: i64) -> bool {
    match pass {
        Pass::Idle => true,
        Pass::More { oldest_at } => unix_now.saturating_sub(*oldest_at) < STALE_AFTER_SECS,
        Pass::NotHolder => false,
    }
}

/// Lease times are wall-clock seconds: they are compared across processes and hosts.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_only_while_events_flow() {
        let now = 1_764_400_000;
        assert!(vouches(&Pass::Idle, now));
        assert!(!vouches(&Pass::NotHolder, now));
        assert!(vouches(&Pass::More { oldest_at: now }, now));
        assert!(vouches(&Pass::More { oldest_at: now - 4 }, now));
        // A backlog: the outbox is behind, events arrive late.
        assert!(!vouches(&Pass::More { oldest_at: now - 5 }, now));
        assert!(!vouches(
            &Pass::More {
                oldest_at: now - 600
            },
            now
        ));
        // A row stamped ahead of this clock (another host's) is not a backlog.
        assert!(vouches(
            &Pass::More {
                oldest_at: now + 30
            },
            now
        ));
    }

    #[test]
    fn the_heartbeat_subject_is_outside_the_stream() {
        let subject = heartbeat_subject("auth.events");
        assert_eq!(subject, "auth.events-heartbeat");
        assert!(!subject.starts_with("auth.events."));
    }
}
