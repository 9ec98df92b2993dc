#!/usr/bin/env bash
# Login flood against a release build with default settings, on SQLite and PostgreSQL.
# Prints, per backend, the goals of "bounded under floods" as ratios measured in this run:
#
#   peak RSS            VmHWM of the server after FLOOD of 64-connection /login   goal ≤ 128 MiB
#   login throughput    logins/s ÷ (cores ÷ time of one hash)                     goal ≥ 0.9
#   /verify p99         p99 during the flood ÷ p99 before it (paced, 2 conns)     goal ≤ 3
#
#   bench/flood.sh                          # both backends, 30 s floods
#   FLOOD=10s BACKENDS=sqlite bench/flood.sh
#
# Needs wrk (apt-get install wrk), curl, python3, and for PostgreSQL a server at
# TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres) that may create a
# database. Client and server share the machine: the figures are floors.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOD="${FLOOD:-30s}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PG="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
command -v wrk >/dev/null || { echo "bench/flood.sh needs wrk (apt-get install wrk)" >&2; exit 1; }

cargo build --release -p auth-service --quiet --bin auth-service --example hash_time
cores=$(nproc)
hash_ms=$(target/release/examples/hash_time 40)
echo "cores: $cores; one Argon2id hash at the default parameters: ${hash_ms} ms"

# wrk --latency output -> the p99 in milliseconds.
p99_ms() { python3 -c '
import re, sys
text = sys.stdin.read()
m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
v, unit = float(m.group(1)), m.group(2)
print(v / 1000 if unit == "us" else v * 1000 if unit == "s" else v)'; }
# wrk output -> successful requests per second (all minus non-2xx, over the duration).
ok_rate() { python3 -c '
import re, sys
text = sys.stdin.read()
total = int(re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text).group(1))
m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
secs = float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(3)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
print(f"{(total - bad) / secs:.1f} {bad}")'; }

for backend in $BACKENDS; do
  dir=$(mktemp -d)
  public=127.0.0.1:18180
  internal=127.0.0.1:18181
  db_env=()
  if [ "$backend" = postgres ]; then
    name="bench_flood_$$"
    psql "$PG" -q -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
    db_env=(DATABASE_URL="${PG%/*}/$name")
  fi
  env RUST_LOG=error AUTH__DATA_DIR="$dir" AUTH__SERVER__PUBLIC_ADDR="$public" \
    AUTH__SERVER__INTERNAL_ADDR="$internal" "${db_env[@]}" \
    target/release/auth-service serve &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://$internal/healthz" >/dev/null && break; sleep 0.1; done
  body='{"username":"bench","password":"correct horse battery"}'
  curl -sf "http://$public/register" -H 'content-type: application/json' -d "$body" >/dev/null
  TOKEN=$(curl -sf "http://$public/login" -H 'content-type: application/json' -d "$body" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  export TOKEN

  base=$(wrk -t1 -c2 -d10s --latency -s bench/verify_paced.lua "http://$internal/verify" | p99_ms)
  rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
  wrk -t1 -c2 -d"$FLOOD" --latency -s bench/verify_paced.lua "http://$internal/verify" >"$dir/verify.txt" &
  probe=$!
  wrk -t2 -c64 -d"$FLOOD" -s bench/login.lua "http://$public/login" >"$dir/login.txt"
  wait $probe
  peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
  during=$(p99_ms <"$dir/verify.txt")
  read -r logins refused < <(ok_rate <"$dir/login.txt")
  kill $server; wait $server 2>/dev/null || true
  rm -rf "$dir"
  [ "$backend" = postgres ] && psql "$PG" -q -c "DROP DATABASE IF EXISTS $name"

  python3 - "$backend" "$rss_before" "$peak_kib" "$logins" "$refused" "$cores" "$hash_ms" "$base" "$during" <<'PY'
import sys
backend, rss0, peak, logins, refused, cores, hash_ms, base, during = sys.argv[1:]
peak_mib = int(peak) / 1024
limit = int(cores) / (float(hash_ms) / 1000)
ratio = float(logins) / limit
slow = float(during) / float(base)
print(f"== {backend}")
print(f"peak RSS: {peak_mib:.1f} MiB (before the flood {int(rss0) / 1024:.1f} MiB)   goal <= 128 MiB: {'met' if peak_mib <= 128 else 'MISSED'}")
print(f"logins: {float(logins):.1f}/s ok ({refused} refused) of {limit:.1f}/s that hashing allows = {ratio:.2f}   goal >= 0.9: {'met' if ratio >= 0.9 else 'MISSED'}")
print(f"/verify p99: {float(during):.2f} ms during, {float(base):.2f} ms before = {slow:.2f}x   goal <= 3: {'met' if slow <= 3 else 'MISSED'}")
PY
done
