DROP TABLE throttle_attempts;
DROP TABLE throttle_buckets;
