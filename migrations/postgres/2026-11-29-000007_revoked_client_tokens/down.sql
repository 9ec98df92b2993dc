DROP TABLE revoked_client_tokens;
