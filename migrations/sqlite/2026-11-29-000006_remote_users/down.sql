ALTER TABLE clients DROP COLUMN can_user_events;
DROP TABLE user_events;
CREATE TABLE sessions_old (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,
    revoked_reason TEXT,
    user_agent     TEXT,
    ip             TEXT
);
INSERT INTO sessions_old (id, user_id, created_at, last_used_at, expires_at, revoked_at,
                          revoked_reason, user_agent, ip)
SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at,
       s.revoked_reason, s.user_agent, s.ip
FROM sessions s JOIN users u ON u.id = s.user_id;
DROP TABLE sessions;
ALTER TABLE sessions_old RENAME TO sessions;
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);
CREATE INDEX sessions_last_used_at_idx ON sessions (last_used_at);
