-- Machine clients' access tokens (client-credentials grant) revoked before they expire, by
-- `jti`. They belong to no session, so they are revoked one by one (RFC 7009). A row is
-- kept as long as a revoked session is (the access-token lifetime and leeway after its
-- revocation), for the revocation index of every replica to load; no token is stored.
CREATE TABLE revoked_client_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    client_id  TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL                    -- the token's own `exp`
);
CREATE INDEX revoked_client_tokens_revoked_at_idx ON revoked_client_tokens (revoked_at);
