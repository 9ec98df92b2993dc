-- One row that readiness checks rewrite: "ready" means the database takes writes. A probe
-- also writes and deletes a second row with ballast larger than any request writes, so a
-- nearly full disk fails the probe before it fails requests.
CREATE TABLE service_health (
    id         INTEGER PRIMARY KEY NOT NULL,
    checked_at BIGINT NOT NULL,
    ballast    BLOB
);
INSERT INTO service_health (id, checked_at) VALUES (1, 0);
