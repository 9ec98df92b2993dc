#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs
# `cargo test --workspace` (every HTTP test on SQLite and on PostgreSQL) and checks
# docker-compose.yml with two real validators. This is the README's test command, and
# `.ci/run` calls exactly it.
#
#   tools/test.sh                     # everything
#   tools/test.sh -p auth-service     # with arguments: `cargo test ARGS` instead of
#   tools/test.sh --workspace login   # `cargo test --workspace`, and no compose check
#
# Needs: Debian's apt (as root, or sudo) for libpq-dev, postgresql-client (pg_isready),
# postgresql (initdb and pg_ctl: the fault tests run a cluster of their own), nginx-light,
# and chromium with chromium-driver (the demo page's browser tests) when they are missing; python3 with venv for the compose validators (from PyPI); a PostgreSQL server at
# TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres). A local cluster
# that is installed but stopped is started. PostgreSQL being unreachable fails the run
# loudly; no test is ever skipped. Likewise nats-server (Debian's package; the event tests
# also run private servers of their own) and a NATS server with JetStream at NATS_URL
# (default nats://127.0.0.1:4222), started locally when it is not answering.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "FAIL: installing packages needs root or sudo: $*" >&2; exit 1
  fi
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

step "system packages"
# diesel's PostgreSQL backend links libpq; SQLite is bundled.
if ! ldconfig -p | grep -q 'libpq\.so\b' || [ ! -e /usr/include/postgresql/libpq-fe.h ]; then
  apt_install libpq-dev
fi
if ! command -v pg_isready >/dev/null; then
  apt_install postgresql-client
fi
# The fault tests start, stop and freeze a PostgreSQL cluster of their own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PG_BIN:-}" ]; then
  apt_install postgresql
fi
# A system test runs deploy/nginx/auth_request.conf in a real nginx (its own instance).
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt_install nginx-light
  # The package starts a system nginx on port 80; the test runs its own.
  as_root service nginx stop >/dev/null 2>&1 || true
fi

# The demo page's tests drive a real headless Chromium through chromedriver
# (resource-service-example/tests/system/browser.rs).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver
fi

# The auth events tests publish to NATS JetStream, and stop and kill servers of their own.
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  apt_install nats-server
fi

step "PostgreSQL at $TEST_POSTGRES_URL"
pg_up() { pg_isready -q -d "$TEST_POSTGRES_URL"; }
if ! pg_up; then
  echo "PostgreSQL is not answering; trying to start the local cluster"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
  echo "FAIL: PostgreSQL is unreachable at $TEST_POSTGRES_URL; the PostgreSQL half of the suite cannot run" >&2
  exit 1
fi

step "NATS (JetStream) at $NATS_URL"
nats_hostport="${NATS_URL#*://}"
nats_hostport="${nats_hostport##*@}"
nats_hostport="${nats_hostport%%[/,]*}"
nats_host="${nats_hostport%:*}"
nats_port="${nats_hostport##*:}"
# Up means: the server greets a new connection with INFO, saying JetStream is on.
nats_up() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3' "$nats_host" "$nats_port" 2>/dev/null \
    | grep -q '"jetstream":true'
}
if ! nats_up; then
  case "$nats_host" in
    127.0.0.1|localhost)
      echo "NATS is not answering; starting nats-server with JetStream on port $nats_port"
      nats_bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
      as_root mkdir -p /var/lib/nats-server
      as_root sh -c "nohup setsid '$nats_bin' -a 127.0.0.1 -p '$nats_port' -js -sd /var/lib/nats-server \
        -l /var/log/nats-server.log >/dev/null 2>&1 &"
      for _ in $(seq 1 30); do nats_up && break; sleep 0.5; done
      ;;
  esac
fi
if ! nats_up; then
  echo "FAIL: no NATS server with JetStream answers at $NATS_URL; the auth events tests cannot run" >&2
  exit 1
fi

step "interoperability: Node's jose (npm) and Python's Authlib (pip) into ${INTEROP_NODE_DIR:=$PWD/target/interop}"
# The interop tests (auth-service/tests/system/interop.rs) verify tokens with unmodified
# client libraries of other ecosystems.
export INTEROP_NODE_DIR
if [ ! -d "$INTEROP_NODE_DIR/node_modules/jose" ]; then
  mkdir -p "$INTEROP_NODE_DIR"
  npm install --prefix "$INTEROP_NODE_DIR" --no-audit --no-fund --silent jose@6.2.18
fi
# ... and Python's Authlib (with requests), in a virtualenv of their own.
export INTEROP_PYTHON="${INTEROP_PYTHON:-$INTEROP_NODE_DIR/venv/bin/python}"
if ! "$INTEROP_PYTHON" -c 'import authlib, requests' 2>/dev/null; then
  python3 -m venv "$INTEROP_NODE_DIR/venv"
  "$INTEROP_NODE_DIR/venv/bin/pip" install --quiet --disable-pip-version-check authlib==1.9.10 requests==2.34.2
  INTEROP_PYTHON="$INTEROP_NODE_DIR/venv/bin/python"
fi

if [ "$#" -eq 0 ]; then
  step "docker-compose.yml: docker-compose config and the compose-spec schema"
  # No Docker engine runs here, so the compose file is checked by two real validators, each
  # in a throwaway virtualenv (their jsonschema requirements clash): docker-compose 1.29
  # (PyPI) parses and interpolates it with deploy/.env.example as `docker compose up` would,
  # and check-jsonschema validates it against the Compose Specification schema it ships.
  # cargo test then starts both binaries with the environment the file gives them
  # (resource-service-example/tests/system/compose.rs).
  compose_tmp="$(mktemp -d)"
  trap 'rm -rf "$compose_tmp"' EXIT
  python3 -m venv "$compose_tmp/compose"
  python3 -m venv "$compose_tmp/schema"
  # docker-compose 1.29 needs PyYAML 5.4, whose sdist only builds with Cython < 3.
  printf 'cython<3\n' >"$compose_tmp/constraints.txt"
  PIP_CONSTRAINT="$compose_tmp/constraints.txt" "$compose_tmp/compose/bin/pip" install --quiet \
    --disable-pip-version-check docker-compose==1.29.2
  "$compose_tmp/schema/bin/pip" install --quiet --disable-pip-version-check check-jsonschema==0.39.0
  docker_compose() {
    "$compose_tmp/compose/bin/docker-compose" --env-file deploy/.env.example -f docker-compose.yml "$@"
  }
  docker_compose config --quiet 2>"$compose_tmp/config.err" || { cat "$compose_tmp/config.err" >&2; exit 1; }
  if [ -s "$compose_tmp/config.err" ]; then
    echo "FAIL: docker-compose config complained (a variable missing from deploy/.env.example?):" >&2
    cat "$compose_tmp/config.err" >&2
    exit 1
  fi
  echo "docker-compose config: valid; services: $(docker_compose config --services | tr '\n' ' ')"
  "$compose_tmp/schema/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
fi

if [ "$#" -eq 0 ]; then
  step "cargo test --workspace (SQLite and PostgreSQL)"
  cargo test --workspace
else
  step "cargo test $* (SQLite and PostgreSQL)"
  cargo test "$@"
fi
