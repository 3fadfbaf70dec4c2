#!/usr/bin/env bash
# A throw-away PostgreSQL server for shared Optuna storage in tests and CI (not for real data:
# trust authentication on 127.0.0.1, fsync off).
#
#   scripts/postgres.sh start   start it when it is not running (initdb the first time); print the URL
#   scripts/postgres.sh url     print the URL of the running server (exit 1 when it is not running)
#   scripts/postgres.sh stop    stop it (the data folder stays for the next start)
#
# Idempotent: `start` on a running server only prints its URL. The server listens on a free
# localhost port, keeps its files in $EXITSEARCH_PG_DIR (default /tmp/exitsearch-postgres) and
# serves the database $EXITSEARCH_PG_DB (default exitsearch). Installs the Debian package
# `postgresql` when no server binaries are found (needs root or sudo). PostgreSQL refuses to
# run as root: as root the server runs as the `postgres` system user.
set -euo pipefail

PGROOT=${EXITSEARCH_PG_DIR:-/tmp/exitsearch-postgres}
DB=${EXITSEARCH_PG_DB:-exitsearch}
DATA=$PGROOT/data
PORT_FILE=$PGROOT/port
LOG=$PGROOT/server.log

die() { echo "postgres.sh: $*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

find_bin() {
  local initdb
  initdb=$(ls -1d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n $initdb ]] && dirname "$initdb"
}

ensure_bin() {
  BIN=$(find_bin || true)
  if [[ -z ${BIN:-} ]]; then
    echo "postgres.sh: installing the Debian package postgresql" >&2
    as_root apt-get install -y -q postgresql >/dev/null 2>&1 || {
      as_root apt-get update -q >/dev/null
      as_root apt-get install -y -q postgresql >/dev/null
    }
    BIN=$(find_bin || true)
    [[ -n ${BIN:-} ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
  fi
}

# Run a server binary as the server's user: `postgres` when we are root, else ourselves.
as_server() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The server must not inherit our descriptors: the start/stop lock (fd 9) would block the next
# call forever, and a caller's pipe would keep the caller waiting for the server to exit.
detached() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    "$@" </dev/null
  )
}

running() { [[ -f $DATA/PG_VERSION ]] && as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# The driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, while exitsearch
# depends on psycopg2-binary.
url() { echo "postgresql+psycopg2://postgres@127.0.0.1:$(cat "$PORT_FILE")/$DB"; }

psql_q() { "$BIN/psql" -h 127.0.0.1 -p "$(cat "$PORT_FILE")" -U postgres -d postgres -tAqc "$1"; }

start() {
  ensure_bin
  mkdir -p "$PGROOT"
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "the postgres system user is missing (reinstall the postgresql package)"
    chown postgres "$PGROOT"
  fi
  if ! running; then
    if [[ ! -f $DATA/PG_VERSION ]]; then
      rm -rf "$DATA"
      as_server "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    fi
    free_port > "$PORT_FILE"
    detached as_server "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
      -o "-p $(cat "$PORT_FILE") -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null || die "the server did not start; see $LOG"
  fi
  if [[ -z $(psql_q "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
    psql_q "CREATE DATABASE \"$DB\"" >/dev/null
  fi
  url
}

stop() {
  BIN=$(find_bin || true)
  if [[ -n ${BIN:-} ]] && running; then
    as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
}

cmd=${1:-}
case $cmd in
  start | stop | url) ;;
  *) die "usage: scripts/postgres.sh start|stop|url" ;;
esac
mkdir -p "$PGROOT"
exec 9>"$PGROOT.lock"
flock 9  # one start/stop at a time (tests and CI may call concurrently)
case $cmd in
  start) start ;;
  stop) stop ;;
  url)
    BIN=$(find_bin || true)
    [[ -n ${BIN:-} ]] && running || die "no server running in $DATA (run: scripts/postgres.sh start)"
    url
    ;;
esac
