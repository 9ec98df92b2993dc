#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API against its OpenAPI description
# (auth-service/openapi.yaml) with schemathesis: a debug build on SQLite in a temporary
# directory, an administrator's token for the admin endpoints, both listeners. It reports
# server errors (5xx), responses that break the description, and valid requests refused.
#
#   tools/fuzz-api.sh                 # 120 s per listener pass
#   MAX_TIME=600 SEED=7 tools/fuzz-api.sh
#
# Needs python3 (schemathesis is installed into a throwaway virtualenv from PyPI). Not part
# of CI: its findings depend on the time budget; run it after changing the API. An "ERRORS"
# section holding a Python traceback from schemathesis's own modules is the tool failing to
# generate cases for an operation, not a finding about the service.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_TIME="${MAX_TIME:-120}"
SEED="${SEED:-1}"
public=127.0.0.1:28080
internal=127.0.0.1:28081

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
cargo build --quiet -p auth-service

export RUST_LOG=warn AUTH__DATA_DIR="$work/data" \
  AUTH__SERVER__PUBLIC_ADDR="$public" AUTH__SERVER__INTERNAL_ADDR="$internal" \
  AUTH__PASSWORD__MEMORY_KIB=256 AUTH__PASSWORD__ITERATIONS=1 AUTH__TOKENS__ACCESS_TTL=1h \
  AUTH__REGISTER__MAX_PER_IP=0 AUTH__LOGIN__MAX_FAILURES=1000000 \
  AUTH__LOGIN__MAX_FAILURES_PER_IP=1000000
password='fuzzing admin password'
printf '%s\n' "$password" | target/debug/auth-service user create --username fuzz-admin --admin >/dev/null
target/debug/auth-service serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://$internal/healthz" >/dev/null && break
  sleep 0.1
done
token=$(curl -sf "http://$public/login" -H 'content-type: application/json' \
  -d "{\"username\":\"fuzz-admin\",\"password\":\"$password\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

st() { "$work/venv/bin/schemathesis" run auth-service/openapi.yaml -H "Authorization: Bearer $token" \
  --max-time "$MAX_TIME" --seed "$SEED" --workers 2 "$@"; }
status=0
echo "== internal listener: /verify"
st -u "http://$internal" --include-path /verify || status=1
echo "== public listener (all but /verify; /logout/all would end the admin's own session)"
lists='^/admin/(users|audit)$'
st -u "http://$public" --exclude-path /verify --exclude-path /logout/all \
  --exclude-path-regex "$lists" || status=1
# Their `cursor` is opaque: a made-up one is rightly refused with 400, which the
# "schema-valid request rejected" check would report as a failure.
echo "== public listener: the paginated lists"
st -u "http://$public" --include-path-regex "$lists" \
  --exclude-checks positive_data_acceptance || status=1
if grep -qE 'internal error [0-9a-f]{32}|service unavailable' "$work/server.log"; then
  echo "FAIL: the server logged internal errors:" >&2
  grep -E 'internal error [0-9a-f]{32}|service unavailable' "$work/server.log" >&2
  status=1
fi
exit $status
