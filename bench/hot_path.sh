#!/usr/bin/env bash
# The hot paths of a release build, as ratios measured in one run:
#
#   /verify, one token repeated  ÷ /healthz of the same server, 64 connections  goal ≥ 0.9
#   /verify, a new token each call, cache on ÷ cache off (verify.cache_size=0)  goal ≥ 0.8
#   POST /oauth/introspect with client authentication ÷ /verify, one token      goal ≥ 0.8
#     (for context: POST /verify with the token in a JSON body ÷ GET /verify, and /verify
#     with verify.require_client, the caller authenticated each call ÷ without)
#   POST /refresh (a fresh refresh token each call, 16 connections) on PostgreSQL
#     ÷ the same SQL statements as plain transactions with pgbench, 16 clients    goal ≥ 0.5
#   POST /refresh on SQLite: rate and p99
#
#   bench/hot_path.sh                        # all of it
#   DURATION=5s ROUNDS=5 PARTS="verify" bench/hot_path.sh
#
# The first three ratios are taken within each of ROUNDS rounds (the request kinds take
# turns) and reported as the median of the rounds, with every round's figure beside it.
#
# Needs wrk, curl, python3, pgbench and psql (postgresql-client), and a PostgreSQL server at
# TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres) that may create a
# database. Client and server share the machine: the figures are floors.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-5}"
PARTS="${PARTS:-verify refresh}"
PG="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export THREADS=2
for tool in wrk pgbench psql; do
  command -v "$tool" >/dev/null || { echo "bench/hot_path.sh needs $tool" >&2; exit 1; }
done
cargo build --release -p auth-service --quiet --bin auth-service --example mint_tokens

rate() { python3 -c '
import re, sys
t = sys.stdin.read()
m = re.search(r"Requests/sec:\s+([\d.]+)", t)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(m.group(1), bad.group(1) if bad else 0)'; }
p99() { python3 -c '
import re, sys
t = sys.stdin.read()
m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
v, u = float(m.group(1)), m.group(2)
print(round(v / 1000 if u == "us" else v * 1000 if u == "s" else v, 2))'; }

dir=$(mktemp -d)
server=
stop() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; }
trap 'stop; rm -rf "$dir"' EXIT
public=127.0.0.1:18380
internal=127.0.0.1:18381
base_env=(RUST_LOG=error AUTH__DATA_DIR="$dir/data" AUTH__SERVER__PUBLIC_ADDR="$public"
  AUTH__SERVER__INTERNAL_ADDR="$internal")
start() { # start [VAR=value ...]
  env "${base_env[@]}" "$@" target/release/auth-service serve &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://$internal/healthz" >/dev/null && return; sleep 0.1; done
  echo "the server did not start" >&2; exit 1
}

if [[ " $PARTS " == *" verify "* ]]; then
  echo "== /verify (SQLite, EdDSA, 64 connections, $ROUNDS rounds of $DURATION per request kind)"
  start
  body='{"username":"bench","password":"correct horse battery"}'
  curl -sf "http://$public/register" -H 'content-type: application/json' -d "$body" >/dev/null
  login() {
    curl -sf "http://$public/login" -H 'content-type: application/json' -d "$body" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
  }
  client_secret=$(env "${base_env[@]}" target/release/auth-service client create --client-id bench-rs --introspect </dev/null |
    sed -n 's/^secret (shown once): //p')
  # The kinds of request take turns, round after round, so that a slow spell of the machine
  # (a neighbour on the host, the other core busy) falls on every kind alike; each ratio is
  # taken within a round, and the median of the rounds is the figure.
  rounds="$dir/rounds.txt"
  : >"$rounds"
  for round in $(seq 1 "$ROUNDS"); do
    token=$(login) # a fresh one each round: access tokens live 5 minutes
    read -r health _ < <(wrk -t2 -c64 -d"$DURATION" "http://$internal/healthz" | rate)
    read -r same bad1 < <(wrk -t2 -c64 -d"$DURATION" -H "Authorization: Bearer $token" "http://$internal/verify" | rate)
    read -r introspect bad2 < <(TOKEN="$token" CLIENT_ID=bench-rs CLIENT_SECRET="$client_secret" \
      wrk -t2 -c64 -d"$DURATION" -s bench/introspect.lua "http://$internal/oauth/introspect" | rate)
    read -r posted bad3 < <(TOKEN="$token" wrk -t2 -c64 -d"$DURATION" -s bench/verify_post.lua "http://$internal/verify" | rate)
    echo "$health $same $introspect $posted $((bad1 + bad2 + bad3))" >>"$rounds"
    echo "  round $round: /healthz $health/s, /verify $same/s, /oauth/introspect $introspect/s, POST /verify $posted/s ($((bad1 + bad2 + bad3)) refused)"
  done
  python3 - "$rounds" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
def show(name, ratios, goal=None):
    med = statistics.median(ratios)
    spread = ", ".join(f"{r:.2f}" for r in ratios)
    verdict = "" if goal is None else f" (goal >= {goal}: {'met' if med >= goal else 'NOT met'})"
    print(f"{name}: median {med:.2f} [rounds: {spread}]{verdict}")
show("/verify repeated token ÷ /healthz", [r[1] / r[0] for r in rows], 0.9)
show("/oauth/introspect (client authenticated each call) ÷ /verify", [r[2] / r[1] for r in rows], 0.8)
show("  context: POST /verify (JSON body) ÷ GET /verify", [r[3] / r[1] for r in rows])
show("  context: /oauth/introspect ÷ POST /verify", [r[2] / r[3] for r in rows])
if any(r[4] for r in rows):
    print("some requests were refused: the figures above are not valid")
PY
  stop
  start AUTH__VERIFY__REQUIRE_CLIENT=true
  basic=$(printf '%s' "bench-rs:$client_secret" | base64 -w0)
  read -r required bad < <(wrk -t2 -c64 -d"$DURATION" -H "Authorization: Bearer $token" \
    -H "X-Client-Authorization: Basic $basic" "http://$internal/verify" | rate)
  echo "  context: GET /verify with verify.require_client $required/s ($bad refused) ÷ without = $(python3 -c "print(round($required/$same, 2))")"
  stop
  start
  # Enough distinct tokens that none repeats within a run.
  env "${base_env[@]}" target/release/examples/mint_tokens access 300000 >"$dir/access.txt"
  read -r cached bad1 < <(TOKENS="$dir/access.txt" wrk -t2 -c64 -d"$DURATION" -s bench/tokens.lua "http://$internal" | rate)
  stop
  start AUTH__VERIFY__CACHE_SIZE=0
  read -r raw bad2 < <(TOKENS="$dir/access.txt" wrk -t2 -c64 -d"$DURATION" -s bench/tokens.lua "http://$internal" | rate)
  stop
  echo "/verify new token each call: cache on $cached/s ($bad1 refused), off $raw/s ($bad2 refused) = $(python3 -c "print(round($cached/$raw, 2))") (goal >= 0.8)"
fi

if [[ " $PARTS " == *" refresh "* ]]; then
  name="bench_hot_$$"
  psql "$PG" -q -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" 2>/dev/null
  db="${PG%/*}/$name"
  trap 'stop; rm -rf "$dir"; psql "$PG" -q -c "DROP DATABASE IF EXISTS $name" 2>/dev/null' EXIT
  for backend in postgres sqlite; do
    rm -rf "$dir/data" && mkdir -p "$dir/data"
    if [ "$backend" = postgres ]; then url="$db"; else url="sqlite://$dir/data/auth.db"; fi
    start DATABASE_URL="$url"
    env "${base_env[@]}" DATABASE_URL="$url" target/release/examples/mint_tokens refresh 40000 >"$dir/refresh.txt"
    out=$(MODE=refresh TOKENS="$dir/refresh.txt" wrk -t2 -c16 -d"$DURATION" --latency -s bench/tokens.lua "http://$public")
    stop
    read -r refresh bad < <(rate <<<"$out")
    echo "== POST /refresh on $backend, 16 connections: $refresh/s ($bad refused), p99 $(p99 <<<"$out") ms"
    if [ "$backend" = postgres ]; then
      # The rotation's statements, as storage/refresh_tokens.rs and domain/sessions.rs issue
      # them, as plain prepared transactions on the tokens minted for the service's run
      # (each UPDATE then finds the token used, as a replay would; the work is the same).
      psql "$db" -q -c "CREATE TABLE bench_tokens AS SELECT row_number() OVER () AS n, r.jti, r.session_id, s.user_id FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.used_at IS NULL"
      count=$(psql "$db" -qtA -c "SELECT count(*) FROM bench_tokens")
      cat >"$dir/rotate.sql" <<'SQL'
\set n random(1, :count)
SELECT jti, session_id AS sid, user_id AS uid FROM bench_tokens WHERE n = :n \gset
BEGIN;
UPDATE refresh_tokens SET used_at = 1 WHERE jti = :jti AND used_at IS NULL;
SELECT jti, session_id, parent_jti, issued_at, expires_at, used_at FROM refresh_tokens WHERE jti = :jti;
SELECT id, user_id, created_at, last_used_at, expires_at, revoked_at, revoked_reason, user_agent, ip FROM sessions WHERE id = :sid;
SELECT id, username, email, password_hash, disabled, created_at, updated_at FROM users WHERE id = :uid;
SELECT role FROM user_roles WHERE user_id = :uid;
INSERT INTO refresh_tokens (jti, session_id, parent_jti, issued_at, expires_at, used_at) VALUES (gen_random_uuid()::text, :sid, NULL, 1, 2, NULL);
UPDATE sessions SET last_used_at = 1 WHERE id = :sid;
INSERT INTO audit_events (at, kind, user_id, session_id, ip, user_agent, detail) VALUES (1, 'token_refreshed', :uid, :sid, NULL, NULL, '{}');
COMMIT;
SQL
      secs="${DURATION%s}"
      tps=$(pgbench -n -M prepared -c16 -j2 -T"$secs" -D count="$count" -f "$dir/rotate.sql" "$db" 2>&1 |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p')
      [ -n "$tps" ] || { echo "pgbench failed" >&2; exit 1; }
      echo "   pgbench, the same statements, 16 clients: $tps tx/s; /refresh ÷ pgbench = $(python3 -c "print(round($refresh/$tps, 2))") (goal >= 0.5)"
    fi
  done
  psql "$PG" -q -c "DROP DATABASE IF EXISTS $name" 2>/dev/null
fi
