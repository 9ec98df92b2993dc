-- Login and registration limits shared by every replica on this database. A bucket counts
-- the failures of one account-and-address (or one address) in its window; an attempt row
-- holds a place while a password is being checked, until its lease runs out (so a replica
-- that dies mid-attempt gives its places back).
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
