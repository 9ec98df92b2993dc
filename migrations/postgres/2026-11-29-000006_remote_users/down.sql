ALTER TABLE clients DROP COLUMN can_user_events;
DROP TABLE user_events;
DELETE FROM sessions WHERE user_id NOT IN (SELECT id FROM users);
ALTER TABLE sessions ADD CONSTRAINT sessions_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE;
