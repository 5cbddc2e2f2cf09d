#!/usr/bin/env bash
# The project's own PostgreSQL cluster: data in .data/ (ignored), its own port and socket,
# owned by a non-root user. Usage: db.sh start | stop | status | psql [args] | url | bridge-url | reset
# `start` upgrades the extension in place (ALTER EXTENSION pg_collab UPDATE); `reset` deletes
# every document and is never needed for an upgrade.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT="${COLLAB_PG_PORT:-5499}"
DATA="${COLLAB_DATA_DIR:-$ROOT/.data}"
mkdir -p "$DATA"
if is_root && ! sudo -u postgres test -x "$DATA" 2>/dev/null; then
    # The checkout sits where 'postgres' cannot reach (e.g. under a 0700 home): keep the
    # cluster in a per-checkout folder it can reach instead.
    DATA="/var/tmp/pg_collab-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)"
    mkdir -p "$DATA"
fi
PGDATA="$DATA/pg"
SOCK="$DATA/run"
is_root && chown postgres "$DATA"

pgctl() { as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" "$@"; }
running() { pgctl status >/dev/null 2>&1; }

start() {
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        say "creating the project's cluster in $PGDATA"
        as_pg mkdir -p "$SOCK"
        as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_pg mkdir -p "$SOCK"
    if running; then
        say "PostgreSQL already running on port $PORT"
    else
        say "starting PostgreSQL on 127.0.0.1:$PORT (socket $SOCK)"
        pgctl start -w -l "$DATA/postgresql.log" \
            -o "-p $PORT -k $SOCK -c listen_addresses=127.0.0.1" >/dev/null
    fi
    # An existing database is upgraded in place to the installed version (the upgrade scripts
    # keep every document); a new one gets the extension. The bridge's role may size its write
    # lanes' document memory (--write-cache-mb), as the README advises a DBA to allow.
    psql_ -q -c "SET client_min_messages = warning" \
        -c "CREATE EXTENSION IF NOT EXISTS pg_collab" -c "ALTER EXTENSION pg_collab UPDATE" \
        -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'collab_bridge_dev')
            THEN CREATE ROLE collab_bridge_dev LOGIN IN ROLE collab_bridge; END IF; END \$\$" \
        -c "GRANT SET ON PARAMETER collab.cache_bytes TO collab_bridge_dev" >/dev/null
    say "pg_collab $(psql_ -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_collab'") in database postgres"
}

psql_() { "$PG_BIN/psql" -X -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

case "${1:-status}" in
    start) start ;;
    stop) running && pgctl stop -m fast >/dev/null && say "stopped" || say "not running" ;;
    status) running && echo "running: postgres://postgres@127.0.0.1:$PORT/postgres" || echo "stopped" ;;
    psql) shift; psql_ "$@" ;;
    url) echo "postgres://postgres@127.0.0.1:$PORT/postgres" ;;
    # What the bridge logs in as: a role with only collab_bridge's rights (README, Security).
    bridge-url) echo "postgres://collab_bridge_dev@127.0.0.1:$PORT/postgres" ;;
    reset)
        running && pgctl stop -m fast >/dev/null
        as_pg rm -rf "$PGDATA"
        start ;;
    *) die "usage: db.sh start|stop|status|psql|url|bridge-url|reset" ;;
esac
