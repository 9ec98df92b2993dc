#!/usr/bin/env bash
# Load test of a release build on this machine: GET /verify (the per-request hot path of
# every resource server) and POST /login (Argon2id-bound). Prints wrk's figures.
#
#   bench/load.sh                      # SQLite in a temporary directory
#   DATABASE_URL=postgres://… bench/load.sh
#   DURATION=30s CONNECTIONS=128 bench/load.sh
#
# Needs wrk (Debian: apt-get install wrk), curl and python3. Client and server share the
# machine, so the figures are a floor, not a ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
command -v wrk >/dev/null || { echo "bench/load.sh needs wrk (apt-get install wrk)" >&2; exit 1; }

cargo build --release -p auth-service --quiet
dir=$(mktemp -d)
public=127.0.0.1:18080
internal=127.0.0.1:18081
env RUST_LOG=warn \
  AUTH__DATA_DIR="$dir" \
  AUTH__SERVER__PUBLIC_ADDR="$public" \
  AUTH__SERVER__INTERNAL_ADDR="$internal" \
  target/release/auth-service serve &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT

for _ in $(seq 1 100); do
  curl -sf "http://$internal/healthz" >/dev/null && break
  sleep 0.1
done

body='{"username":"bench","password":"correct horse battery"}'
curl -sf "http://$public/register" -H 'content-type: application/json' -d "$body" >/dev/null
token=$(curl -sf "http://$public/login" -H 'content-type: application/json' -d "$body" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

echo "== GET /verify (EdDSA access token), $CONNECTIONS connections, $DURATION"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
  -H "Authorization: Bearer $token" "http://$internal/verify"

echo
echo "== POST /login (Argon2id m=19456 KiB t=2 p=1), 8 connections, $DURATION"
wrk -t"$THREADS" -c8 -d"$DURATION" --latency -s bench/login.lua "http://$public/login"
