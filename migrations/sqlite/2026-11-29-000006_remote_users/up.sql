-- Users may live in a user service (`users.source = "remote"`): sessions then name users
-- this database does not hold, so sessions.user_id stops referencing users(id). Nothing
-- deletes users, so the cascade it carried never ran; built-in users keep their sessions
-- exactly as before. SQLite cannot drop a constraint: the table is rebuilt (the migration
-- runner turns foreign keys off around migrations, so dropping the old table cascades to
-- nothing).
CREATE TABLE sessions_new (
    id             TEXT PRIMARY KEY NOT NULL,         -- the `sid` claim
    user_id        TEXT NOT NULL,                     -- users(id), or the user service's id
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    expires_at     BIGINT,                            -- absolute cap, if configured
    revoked_at     BIGINT,
    revoked_reason TEXT,
    user_agent     TEXT,
    ip             TEXT
);
INSERT INTO sessions_new (id, user_id, created_at, last_used_at, expires_at, revoked_at,
                          revoked_reason, user_agent, ip)
SELECT id, user_id, created_at, last_used_at, expires_at, revoked_at, revoked_reason,
       user_agent, ip
FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);
CREATE INDEX sessions_last_used_at_idx ON sessions (last_used_at);

-- What the user service reported (a user disabled, a role removed, a password changed),
-- once per event id: repeats change nothing. A login notes the highest `seq` before the
-- user service checks the credentials; a report about that user with a higher one means
-- the user is read again before a session opens.
CREATE TABLE user_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX user_events_user_idx ON user_events (user_id, seq);
CREATE INDEX user_events_received_idx ON user_events (received_at);

-- A client allowed to report user changes (the user service).
ALTER TABLE clients ADD COLUMN can_user_events BOOLEAN NOT NULL DEFAULT FALSE;
