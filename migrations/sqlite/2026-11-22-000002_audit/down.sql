DROP INDEX users_created_at_idx;
DROP INDEX sessions_last_used_at_idx;
DROP INDEX refresh_tokens_expires_at_idx;
DROP TABLE audit_events;
