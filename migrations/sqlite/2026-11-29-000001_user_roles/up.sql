-- Roles move from a comma-separated column into a table of their own: one row per role a
-- user holds, so "who is an administrator" is an exact, indexed match.
CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role_idx ON user_roles (role, user_id);

WITH RECURSIVE split(user_id, role, rest) AS (
    SELECT id, '', roles || ',' FROM users
    UNION ALL
    SELECT user_id,
           substr(rest, 1, instr(rest, ',') - 1),
           substr(rest, instr(rest, ',') + 1)
    FROM split
    WHERE rest <> ''
)
INSERT OR IGNORE INTO user_roles (user_id, role)
SELECT user_id, role FROM split WHERE role <> '';

ALTER TABLE users DROP COLUMN roles;
