-- Users, sessions (refresh-token families) and the refresh tokens issued in them.
-- Timestamps are Unix seconds (UTC). No raw token is stored anywhere.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,          -- UUID
    username      TEXT NOT NULL,                      -- as registered
    username_key  TEXT NOT NULL UNIQUE,               -- lower-cased, for case-insensitive uniqueness
    email         TEXT UNIQUE,                        -- lower-cased
    password_hash TEXT NOT NULL,                      -- Argon2 PHC string
    roles         TEXT NOT NULL DEFAULT 'user',       -- comma-separated role names
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY NOT NULL,         -- the `sid` claim
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT NOT NULL,
    expires_at     BIGINT,                            -- absolute cap, if configured
    revoked_at     BIGINT,
    revoked_reason TEXT,
    user_agent     TEXT,
    ip             TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at);

CREATE TABLE refresh_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    parent_jti TEXT UNIQUE,                           -- a token has at most one child
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
