#!/usr/bin/env bash
# Documents sharded over N PostgreSQL clusters with PL/Proxy, on loopback: N shard clusters with
# pg_collab (and the bridge's least-privileged role), and a proxy cluster whose `collab.*`
# functions (sql/plproxy/proxy.sql) run on the shard that owns the document:
# partition = collab.shard_hash(name) & (N - 1), the same rule as collab-bridge --shard-url.
# Used by bridge/tests/shards.rs and scripts/bench-shards.sh; see docs/operations.md.
#
#   scripts/shards.sh start DIR N      N (a power of two) shards and a proxy under DIR; prints
#                                      shell lines SHARD<i>_PORT=, PROXY_PORT=, and
#                                      BRIDGE_ARGS= (the --shard-url flags for a bridge)
#   scripts/shards.sh install-proxy PORT DB SHARD_CONNSTR...
#                                      installs the proxy functions into an existing database
#                                      (PL/Proxy's server collab_shards, one partition per
#                                      connection string, in order)
#   scripts/shards.sh stop DIR         stops every cluster under DIR (immediate)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BRIDGE_USER="${BRIDGE_USER:-bridge_login}"
# Throwaway clusters: durability settings of the test clusters (bridge/tests/common).
FAST="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"

start_cluster() { # dir port
    mkdir -p "$1"
    is_root && chown postgres "$1"
    as_pg "$PG_BIN/initdb" -D "$1/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 -N >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" -w -l "$1/log" \
        -o "-p $2 -k $1 -c listen_addresses=127.0.0.1 $FAST" start >/dev/null
}

psql_at() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d "$2" "${@:3}"; }

install_proxy() { # port db connstr...
    local port="$1" db="$2"; shift 2
    local n=$# opts="" i=0
    [ "$n" -gt 0 ] && [ $((n & (n - 1))) = 0 ] || die "PL/Proxy needs a power of two of shards, got $n"
    for c in "$@"; do
        opts+="${opts:+, }p$i '${c//\'/\'\'}'"
        i=$((i + 1))
    done
    psql_at "$port" "$db" -c "SET client_min_messages = warning" \
        -c "CREATE EXTENSION IF NOT EXISTS plproxy" \
        -c "DROP SERVER IF EXISTS collab_shards CASCADE" \
        -c "CREATE SERVER collab_shards FOREIGN DATA WRAPPER plproxy OPTIONS (connection_lifetime '1800', $opts)" \
        -c "COMMENT ON SERVER collab_shards IS 'pg_collab shards: partition i is the shard that owns documents with collab.shard_hash(name) & (count - 1) = i'" \
        -f "$ROOT/sql/plproxy/proxy.sql"
}

case "${1:-}" in
start)
    dir="${2:?usage: scripts/shards.sh start DIR N}"; n="${3:?usage: scripts/shards.sh start DIR N}"
    mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
    chmod 755 "$dir" # the clusters' owner (postgres when we are root) must reach them
    conns=(); args=""
    for ((i = 0; i < n; i++)); do
        port="$(free_port)"
        start_cluster "$dir/shard$i" "$port"
        psql_at "$port" postgres -c "CREATE EXTENSION pg_collab" \
            -c "CREATE ROLE $BRIDGE_USER LOGIN IN ROLE collab_bridge" >/dev/null
        conns+=("host=127.0.0.1 port=$port dbname=postgres")
        args+="${args:+ }--shard-url postgres://$BRIDGE_USER@127.0.0.1:$port/postgres"
        echo "SHARD${i}_PORT=$port"
    done
    port="$(free_port)"
    start_cluster "$dir/proxy" "$port"
    # The proxy's callers are mapped to the shards' superuser here (trust on loopback); in
    # production map each application role to a shard role with the same rights.
    install_proxy "$port" postgres "${conns[@]}" >/dev/null
    psql_at "$port" postgres -c "CREATE USER MAPPING FOR postgres SERVER collab_shards" >/dev/null
    echo "PROXY_PORT=$port"
    echo "BRIDGE_ARGS=\"$args\""
    ;;
install-proxy)
    shift
    port="${1:?}"; db="${2:?}"; shift 2
    install_proxy "$port" "$db" "$@"
    ;;
stop)
    dir="${2:?usage: scripts/shards.sh stop DIR}"
    for d in "$dir"/shard* "$dir"/proxy; do
        [ -f "$d/data/postmaster.pid" ] &&
            { as_pg "$PG_BIN/pg_ctl" -D "$d/data" -m immediate -w stop >/dev/null 2>&1 || true; }
    done
    ;;
*) die "usage: scripts/shards.sh start|install-proxy|stop ..." ;;
esac
