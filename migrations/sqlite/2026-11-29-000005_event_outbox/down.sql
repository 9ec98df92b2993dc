DROP TABLE event_relay_lease;
DROP TABLE event_outbox;
DROP INDEX audit_events_event_id_idx;
ALTER TABLE audit_events DROP COLUMN event_id;
