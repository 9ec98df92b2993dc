#!/usr/bin/env bash
# Revocation propagation between replicas: three release-build auth-service replicas on one
# fresh PostgreSQL database (default settings: revocation.poll_interval 5s stays the
# fallback, so only the LISTEN/NOTIFY push can make this fast). Each trial logs in, checks
# the access token on every replica's /verify (200, which also fills their verify caches),
# logs out on a random replica A, then polls the other two replicas' /verify concurrently
# every 5 ms; the trial's time is from the logout's answer until both answer token_revoked.
# Prints p50, p90, p99 and max over N trials, and whether the goal p99 <= 1 s is met.
#
#   bench/replicas.sh              # 200 trials
#   N=50 bench/replicas.sh
#
# Needs curl, psql, python3 (stdlib only) and a PostgreSQL server at TEST_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/postgres) that may create a database; the
# database (bench_replicas_<pid>) is dropped and the replicas are killed on exit. Client and
# replicas share the machine; a time includes up to one 5 ms polling step and one /verify
# round trip, so it is an upper bound on the propagation itself.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-200}"
PG="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REPLICAS=3
export PGOPTIONS="-c client_min_messages=warning" # no NOTICE for a database that is not there

cargo build --release -p auth-service --bin auth-service

name="bench_replicas_$$"
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql "$PG" -q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql "$PG" -q -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
db_url="${PG%/*}/$name"

# 2 × REPLICAS free loopback ports.
read -r -a ports < <(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' $((2 * REPLICAS)))

public=() internal=()
for i in $(seq 0 $((REPLICAS - 1))); do
  pub=127.0.0.1:${ports[$((2 * i))]}
  int=127.0.0.1:${ports[$((2 * i + 1))]}
  # One data directory: the first replica generates the keys, the others read them.
  env -i PATH="$PATH" RUST_LOG=warn AUTH__DATA_DIR="$dir" AUTH__DATABASE__URL="$db_url" \
    AUTH__SERVER__PUBLIC_ADDR="$pub" AUTH__SERVER__INTERNAL_ADDR="$int" \
    target/release/auth-service serve >"$dir/replica-$i.log" 2>&1 &
  pids+=($!)
  ready=
  for _ in $(seq 1 300); do
    if curl -sf "http://$pub/readyz" >/dev/null && curl -sf "http://$int/healthz" >/dev/null; then
      ready=1; break
    fi
    kill -0 "${pids[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "replica $i did not start:" >&2; cat "$dir/replica-$i.log" >&2; exit 1
  fi
  public+=("http://$pub") internal+=("http://$int")
done
echo "replicas: ${public[*]} (internal: ${internal[*]}); database $name; $N trials"

# In the background and waited for, so that a signal to this script ends the run at once.
python3 - "$N" "${public[@]}" "${internal[@]}" <<'PY' &
import json, random, sys, threading, time, urllib.error, urllib.request

n = int(sys.argv[1])
urls = sys.argv[2:]
public, internal = urls[: len(urls) // 2], urls[len(urls) // 2 :]
POLL = 0.005   # seconds between one replica's /verify calls
GIVE_UP = 10.0 # a trial longer than this (twice the 5 s polling fallback) is a failure


def call(method, url, body=None, token=None):
    """(status, JSON body or None)"""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, (json.loads(raw) if raw else None)


creds = {"username": "bench", "password": "correct horse battery"}
status, body = call("POST", f"{public[0]}/register", creds)
assert status == 201, (status, body)

times = []
for trial in range(n):
    status, body = call("POST", f"{random.choice(public)}/login", creds)
    assert status == 200, (status, body)
    at, rt = body["access_token"], body["refresh_token"]
    for url in internal:
        status, body = call("GET", f"{url}/verify", token=at)
        assert status == 200, (url, status, body)
    a = random.randrange(len(public))
    others = [internal[i] for i in range(len(internal)) if i != a]
    status, body = call("POST", f"{public[a]}/logout", {"refresh_token": rt})
    assert status == 204, (status, body)
    t0 = time.perf_counter()
    seen = {}

    def watch(url):
        while time.perf_counter() - t0 < GIVE_UP:
            status, body = call("GET", f"{url}/verify", token=at)
            if status == 401 and body and body.get("error") == "token_revoked":
                seen[url] = time.perf_counter() - t0
                return
            assert status == 200, (url, status, body)
            time.sleep(POLL)

    threads = [threading.Thread(target=watch, args=(u,)) for u in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(seen) < len(others):
        print(f"trial {trial}: not revoked everywhere after {GIVE_UP:.0f} s", file=sys.stderr)
        times.append(float("inf"))
    else:
        times.append(max(seen.values()))

times.sort()


def pct(p):
    """Nearest-rank percentile, in ms."""
    k = max(0, -(-p * len(times) // 100) - 1)
    return times[int(k)] * 1000


p50, p90, p99, worst = pct(50), pct(90), pct(99), times[-1] * 1000
print(f"logout on one replica -> token_revoked on both others, {len(times)} trials:")
print(f"p50 {p50:.1f} ms   p90 {p90:.1f} ms   p99 {p99:.1f} ms   max {worst:.1f} ms")
print(f"goal p99 <= 1000 ms: {'met' if p99 <= 1000 else 'MISSED'}")
PY
client=$!
pids+=("$client")
wait "$client"
