-- Registered OAuth clients: resource servers (introspection) and machine clients. The
-- secret is stored as a keyed hash (HMAC-SHA256), never in clear.
CREATE TABLE clients (
    client_id              TEXT PRIMARY KEY NOT NULL,
    secret_hash            TEXT NOT NULL,
    can_introspect         BOOLEAN NOT NULL DEFAULT FALSE,
    can_client_credentials BOOLEAN NOT NULL DEFAULT FALSE,
    can_password           BOOLEAN NOT NULL DEFAULT FALSE,
    scopes                 TEXT NOT NULL DEFAULT '',         -- space-separated, for client_credentials
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
