-- Users may live in a user service (`users.source = "remote"`): sessions then name users
-- this database does not hold, so sessions.user_id stops referencing users(id). Nothing
-- deletes users, so the cascade it carried never ran; built-in users keep their sessions
-- exactly as before.
ALTER TABLE sessions DROP CONSTRAINT IF EXISTS sessions_user_id_fkey;

-- What the user service reported (a user disabled, a role removed, a password changed),
-- once per event id: repeats change nothing. A login notes the highest `seq` before the
-- user service checks the credentials; a report about that user with a higher one means
-- the user is read again before a session opens.
CREATE TABLE user_events (
    seq         BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX user_events_user_idx ON user_events (user_id, seq);
CREATE INDEX user_events_received_idx ON user_events (received_at);

-- A client allowed to report user changes (the user service).
ALTER TABLE clients ADD COLUMN can_user_events BOOLEAN NOT NULL DEFAULT FALSE;
