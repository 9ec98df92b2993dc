-- Users, their roles, and the outbox of notifications for the auth service.
-- Timestamps are Unix seconds (UTC).
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,          -- UUID
    username      TEXT NOT NULL,                      -- as registered
    username_key  TEXT NOT NULL UNIQUE,               -- lower-cased: usernames are case-insensitive
    email         TEXT UNIQUE,                        -- lower-cased
    password_hash TEXT NOT NULL,                      -- argon2id PHC string
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Written in the same transaction as the change it reports; deleted once the auth service
-- answered 2xx. Delivered in `seq` order.
CREATE TABLE notifications (
    seq     BIGSERIAL PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,                     -- the event id (UUID v4)
    kind    TEXT NOT NULL,                            -- user_disabled | role_revoked | password_changed
    user_id TEXT NOT NULL,
    role    TEXT,                                     -- role_revoked only
    at      BIGINT NOT NULL
);
