DROP TABLE service_health;
