-- Audit trail of security-relevant events, and indexes for administration and pruning.
CREATE TABLE audit_events (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,                 -- Unix seconds
    kind       TEXT NOT NULL,
    user_id    TEXT,                            -- no foreign key: the record outlives the user
    session_id TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT NOT NULL DEFAULT '{}'       -- JSON object
);
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, id);
CREATE INDEX audit_events_kind_idx ON audit_events (kind, id);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
CREATE INDEX sessions_last_used_at_idx ON sessions (last_used_at);
CREATE INDEX users_created_at_idx ON users (created_at, id);
