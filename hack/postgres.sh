#!/usr/bin/env bash
# A real PostgreSQL server (Debian's packages) on 127.0.0.1, for tests and the demo.
#
#   hack/postgres.sh up      install the server if missing, initdb a cluster under .dev/postgres,
#                            start it (idempotent), create database `directstream`, wait until it answers
#   hack/postgres.sh down    stop it (fast shutdown) and delete its data
#   hack/postgres.sh env     print `export DIRECTSTREAM_POSTGRES_DSN=postgresql://...`
#
# initdb and postgres refuse to run as root: as root the cluster belongs to the `postgres` OS
# user (created by the Debian package); otherwise it belongs to the current user.
source "$(dirname "$0")/lib.sh"

PG_VERSION="${PG_VERSION:-15}"
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
STATE="$DEV/postgres"
if [ "$(id -u)" = 0 ]; then
  # The server runs as the postgres user, who may not traverse the checkout's parents (a
  # mktemp -d folder is 0700): keep this checkout's cluster under /var/tmp instead.
  STATE="/var/tmp/directstream-postgres-$(printf %s "$ROOT" | sha256sum | cut -c1-12)"
fi
PORT_FILE="$STATE/port"
DATA="$STATE/data"
SOCKETS="$STATE/sockets"
DB_USER=directstream
DB_NAME=directstream

# as_owner CMD...: run CMD as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

dsn() { echo "postgresql://$DB_USER@127.0.0.1:$(cat "$PORT_FILE")/$DB_NAME"; }

answers() { as_owner "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(cat "$PORT_FILE")" -d postgres; }

up() {
  if [ ! -x "$PG_BIN/initdb" ]; then
    apt_install "postgresql-$PG_VERSION"
    # The Debian package starts a system cluster on 5432; this project runs its own.
    if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster "$PG_VERSION" main stop 2>/dev/null || true; fi
  fi
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL $PG_VERSION binaries not found under $PG_BIN"
  if pid_alive "$STATE/pid" && answers; then log "already running at $(dsn)"; return 0; fi
  down
  mkdir -p "$DATA" "$SOCKETS"
  local port; port=${POSTGRES_PORT:-$(free_port)}
  echo "$port" >"$PORT_FILE"
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$STATE"; fi
  # Trust on loopback only: the server listens on 127.0.0.1 and a private socket directory.
  as_owner "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    >"$STATE/initdb.log" 2>&1 || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
  cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SOCKETS'
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
  log "starting PostgreSQL $PG_VERSION on 127.0.0.1:$port"
  as_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$STATE/postgres.log" -w -t 60 start >/dev/null \
    || { tail -30 "$STATE/postgres.log" >&2; die "PostgreSQL did not start"; }
  head -1 "$DATA/postmaster.pid" >"$STATE/pid"
  wait_for 30 "PostgreSQL to answer" answers
  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
  as_owner "${psql[@]}" -c "CREATE ROLE $DB_USER LOGIN" \
    -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
  log "PostgreSQL is up at $(dsn)"
}

down() {
  if [ -f "$DATA/postmaster.pid" ] && [ -x "$PG_BIN/pg_ctl" ]; then
    as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  fi
  stop_pid "$STATE/pid"
  rm -rf "$STATE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) [ -f "$PORT_FILE" ] && echo "export DIRECTSTREAM_POSTGRES_DSN=$(dsn)" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
