//! Auth events on a message broker (NATS JetStream): the relay that moves the audit events
//! queued in the outbox table (see [`crate::domain::audit::Outbox`]) to the broker, and the
//! broker adapter it publishes through.
//!
//! The guarantees, and where each comes from:
//!
//! * at least once: an event leaves the outbox only after the broker acknowledged it (a
//!   `PubAck` means the stream stored it); a crash between the ack and the delete publishes
//!   it again, under the same `Nats-Msg-Id`, which the stream drops within its duplicate
//!   window and consumers recognise by the `id` field after that;
//! * in order per user: one relay (the holder of a lease row) publishes at a time, in `seq`
//!   order, each event acknowledged before the next is sent; and per user `seq` order is
//!   commit order (a per-user lock on PostgreSQL, one writer at a time on SQLite);
//! * the broker's trouble never reaches a request: requests only write rows; the relay runs
//!   on its own task and backs off (up to 5 s) while the broker is away.
//!
//! The relay polls the outbox every `events.poll_interval` rather than being woken by the
//! requests that wrote rows: rows also come from the command line and from other replicas,
//! which only a poll sees, so one mechanism serves all of them, the domain's outbox flag
//! stays a plain value, and the cost is one indexed read per interval (200 ms by default).
//!
//! This module may use storage, config and metrics; never the HTTP layer or the domain.

mod broker;
mod relay;

pub use broker::BrokerError;
pub use relay::{RelayHandle, spawn_relay};
