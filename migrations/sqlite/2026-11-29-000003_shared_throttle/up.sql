-- The same tables as on PostgreSQL, so the schema is one; SQLite serves one instance and
-- keeps its limits in memory, so these stay empty there.
CREATE TABLE throttle_buckets (
    key          TEXT PRIMARY KEY NOT NULL,
    window_start BIGINT NOT NULL,
    failures     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE throttle_attempts (
    id          TEXT NOT NULL,
    key         TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (id, key)
);
CREATE INDEX throttle_attempts_key_idx ON throttle_attempts (key, lease_until);
