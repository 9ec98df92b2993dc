-- Auth events for the message broker (events.url). Every audit row gets an event id (also
-- when events are off), the id the event is published under.
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX audit_events_event_id_idx ON audit_events (event_id);

-- The transactional outbox: written in the transaction of the change an event records, read
-- in seq order by the relay, and deleted row by row once the broker acknowledged the event.
CREATE TABLE event_outbox (
    seq        BIGSERIAL PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,            -- the Nats-Msg-Id, and "id" in the payload
    subject    TEXT NOT NULL,                   -- below events.subject_prefix: the kind
    payload    TEXT NOT NULL,                   -- the JSON message, as published
    created_at BIGINT NOT NULL                  -- Unix seconds
);

-- One row: which relay (replica) publishes, until when. Taken when expired or released.
CREATE TABLE event_relay_lease (
    id         INTEGER PRIMARY KEY NOT NULL,
    holder     TEXT,
    expires_at BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_relay_lease (id, holder, expires_at) VALUES (1, NULL, 0);
