#!/usr/bin/env bash
# Make sure the servers the tests talk to are up: Redis (required) and PostgreSQL (optional),
# and that the browser the dashboard test drives is installed (Debian's chromium + its driver).
# Prints the environment to export, e.g.: eval "$(scripts/ensure-services.sh)"
set -u
log() { echo "ensure-services: $*" >&2; }
APT_UPDATED=""
apt_install() {
  SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq >&2; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >&2
}

redis_up() { command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server with apt-get"
    apt_install redis-server
  fi
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save "" --appendonly no >&2
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
fi
redis_up || { log "Redis is not reachable on 127.0.0.1:6379"; exit 1; }

# Chromium: tests/service/test_dashboard_browser.py fails (never skips) without it.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium and chromium-driver with apt-get"
  apt_install chromium chromium-driver || log "could not install chromium: the dashboard test will fail"
fi

# PostgreSQL: the job-store tests run against it when it answers (it does on the project's machines).
pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up && command -v service >/dev/null 2>&1 && ls /etc/init.d/postgresql >/dev/null 2>&1; then
  log "starting the installed PostgreSQL"
  service postgresql start >&2 || true
  for _ in $(seq 1 30); do pg_up && break; sleep 0.2; done
fi
if pg_up; then
  echo "export PRUNEKIT_TEST_POSTGRES_URL=${PRUNEKIT_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
else
  log "PostgreSQL is not answering on 127.0.0.1:5432: the PostgreSQL job-store tests will not run"
fi
