DROP TABLE notifications;
DROP TABLE user_roles;
DROP TABLE users;
