#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL server for the journal/pgjournal
# tests.
#
#   .ci/postgres.sh start DIR   initdb into DIR, start on 127.0.0.1:$PGCI_PORT,
#                               create database safegen, print the DSN
#   .ci/postgres.sh stop DIR    stop the server started in DIR (quietly, if any)
#
# postgres refuses to run as root, so when run as root the server runs as the
# user $PGCI_USER (created if missing). Authentication is trust, on loopback
# and a unix socket inside DIR only. Progress goes to stderr; stdout holds
# only the DSN, so a caller can do: export SAFEGEN_TEST_PG_DSN=$(.ci/postgres.sh start "$dir")
set -euo pipefail

PGCI_USER="${PGCI_USER:-pgci}"
PGCI_PORT="${PGCI_PORT:-}"
PGCI_DB="${PGCI_DB:-safegen}"

find_bindir() {
  bindir=""
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin /usr/local/bin /usr/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then bindir=$d; return; fi
  done
}
find_bindir
# These machines ship PostgreSQL 15; on one without it, install it.
if [ -z "$bindir" ] && [ "${1:-}" = start ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "postgres.sh: installing PostgreSQL from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  find_bindir
fi
if [ -z "$bindir" ]; then
  echo "postgres.sh: no initdb/pg_ctl found" >&2; exit 1
fi
# The client tools (pg_isready, createdb) may sit in another folder.
clientbin() {
  for d in "$bindir" /usr/lib/postgresql/15/bin /usr/local/bin /usr/bin; do
    if [ -x "$d/$1" ]; then echo "$d/$1"; return; fi
  done
  echo "postgres.sh: no $1 found" >&2; exit 1
}

# as runs a command as the server's user (or as ourselves when not root).
as() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PGCI_USER" -- "$@"
  else
    "$@"
  fi
}

cmd="${1:-}"; dir="${2:-}"
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2; exit 2
fi
user=$(id -un)
if [ "$(id -u)" = 0 ]; then user=$PGCI_USER; fi

case "$cmd" in
start)
  if [ "$(id -u)" = 0 ] && ! id "$PGCI_USER" >/dev/null 2>&1; then
    useradd -m "$PGCI_USER" >&2
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown "$PGCI_USER" "$dir"; fi
  chmod 700 "$dir"
  if [ -z "$PGCI_PORT" ]; then
    # The first free port from 55432 up. A port is busy while any socket
    # uses it, TIME-WAIT included (postgres could not bind it then).
    for p in $(seq 55432 55532); do
      if command -v ss >/dev/null; then
        [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && { PGCI_PORT=$p; break; }
      elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        PGCI_PORT=$p; break
      fi
    done
  fi
  as "$bindir/initdb" -D "$dir/data" -U "$user" --auth=trust --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PGCI_PORT -k $dir -c fsync=on -c max_connections=200" start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }
  for _ in $(seq 1 60); do
    if "$(clientbin pg_isready)" -q -h 127.0.0.1 -p "$PGCI_PORT"; then break; fi
    sleep 0.5
  done
  "$(clientbin pg_isready)" -h 127.0.0.1 -p "$PGCI_PORT" >&2
  "$(clientbin createdb)" -h 127.0.0.1 -p "$PGCI_PORT" -U "$user" "$PGCI_DB" >&2
  echo "postgres://$user@127.0.0.1:$PGCI_PORT/$PGCI_DB?sslmode=disable"
  ;;
stop)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  fi
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2; exit 2
  ;;
esac
