ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT 'user';
UPDATE users SET roles = COALESCE(
    (SELECT group_concat(role, ',') FROM (SELECT role FROM user_roles r WHERE r.user_id = users.id ORDER BY role)),
    ''
);
DROP TABLE user_roles;
