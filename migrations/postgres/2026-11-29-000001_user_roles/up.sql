-- Roles move from a comma-separated column into a table of their own: one row per role a
-- user holds, so "who is an administrator" is an exact, indexed match.
CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role_idx ON user_roles (role, user_id);

INSERT INTO user_roles (user_id, role)
SELECT DISTINCT id, role
FROM users, unnest(string_to_array(roles, ',')) AS role
WHERE role <> '';

ALTER TABLE users DROP COLUMN roles;
