#!/usr/bin/env bash
# A high-availability set-up on loopback with pg_auto_failover: a monitor and two PostgreSQL
# nodes (primary + synchronous streaming standby), each node supervised by its own `pg_autoctl
# run` keeper, with pg_collab created on the primary (the standby replays it) and the bridge's
# least-privileged role. Used by bridge/tests/failover.rs; see docs/operations.md.
#
#   scripts/ha.sh start DIR     set up and start everything under DIR (must be empty or absent);
#                               prints shell lines: MONITOR_PORT= NODE1_PORT= NODE2_PORT= URL=
#   scripts/ha.sh primary DIR   prints the port of the current primary (asks the monitor)
#   scripts/ha.sh kill DIR PORT SIGKILLs the keeper and the postmaster of the node on PORT
#                               (a lost machine: nothing restarts it)
#   scripts/ha.sh stop DIR      stops everything (immediate) and removes nothing
#
# Health checks are tuned down from pg_auto_failover's defaults (20 s before a node is
# considered unhealthy, 30 s for a primary to demote) so a failover takes seconds on loopback;
# production values belong to the network the nodes share (docs/operations.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

cmd="${1:?usage: scripts/ha.sh start|primary|kill|stop DIR}"
dir="${2:?usage: scripts/ha.sh start|primary|kill|stop DIR}"
mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
BRIDGE_USER="${BRIDGE_USER:-bridge_login}"
command -v pg_autoctl >/dev/null || die "pg_autoctl missing: run scripts/setup.sh --tests (Debian pg-auto-failover-cli)"
test -f "$("$PG_CONFIG" --pkglibdir)/pgautofailover.so" ||
    die "pgautofailover.so missing in $("$PG_CONFIG" --pkglibdir) (Debian postgresql-15-auto-failover)"

psql_at() { "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U postgres "${@:2}"; }

autoctl() { # pgdata, args...
    # pg_autoctl finds pg_ctl through PG_CONFIG; its state and config live under XDG dirs that
    # we keep inside DIR so that several set-ups (and engineers) never share them.
    as_pg env PG_CONFIG="$PG_CONFIG" XDG_CONFIG_HOME="$dir/xdg/config" \
        XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run" PGDATA="$1" \
        pg_autoctl "${@:2}"
}

run_keeper() { # name pgdata
    as_pg env PG_CONFIG="$PG_CONFIG" XDG_CONFIG_HOME="$dir/xdg/config" \
        XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run" PGDATA="$2" \
        setsid pg_autoctl run >"$dir/$1.log" 2>&1 </dev/null &
}

# The keeper's supervisor: a session leader (setsid), so its group is the keeper and its services.
keeper_pid() { head -1 "$dir/xdg/run/pg_autoctl$dir/$1/pg_autoctl.pid" 2>/dev/null; }

kill_node() { # name
    local k p
    k="$(keeper_pid "$1" || true)"
    if [ -n "$k" ]; then kill -KILL -- "-$k" 2>/dev/null || kill -KILL "$k" 2>/dev/null || true; fi
    p="$(head -1 "$dir/$1/postmaster.pid" 2>/dev/null || true)"
    if [ -n "$p" ]; then
        # The postmaster's children too, as on a lost machine: its logger and pg_auto_failover's
        # health-check worker do not exit when the postmaster dies, and outlived the tests.
        # shellcheck disable=SC2046
        kill -KILL "$p" $(pgrep -P "$p") 2>/dev/null || true
    fi
}

wait_for() { # what seconds command...
    local what="$1" limit="$2"; shift 2
    local t=0
    until "$@" >/dev/null 2>&1; do
        t=$((t + 1))
        [ "$t" -le $((limit * 5)) ] || die "timed out waiting for $what (logs in $dir)"
        sleep 0.2
    done
}

node_port() { cat "$dir/$1.port"; }

case "$cmd" in
start)
    mkdir -p "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run"
    is_root && chown -R postgres "$dir"
    chmod 700 "$dir/xdg/run"
    for n in monitor node1 node2; do free_port >"$dir/$n.port"; done
    mon="$(node_port monitor)"
    autoctl "$dir/monitor" create monitor --pgctl "$PG_BIN/pg_ctl" --hostname 127.0.0.1 \
        --pgport "$mon" --auth trust --no-ssl >"$dir/monitor.create.log" 2>&1 ||
        die "monitor creation failed: $(tail -5 "$dir/monitor.create.log")"
    run_keeper monitor "$dir/monitor"
    wait_for "the monitor" 60 psql_at "$mon" -d pg_auto_failover -c "SELECT 1"
    psql_at "$mon" -d pg_auto_failover >/dev/null <<'SQL'
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 2000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 3000;
ALTER SYSTEM SET pgautofailover.startup_grace_period = 2000;
SELECT pg_reload_conf();
SQL
    monitor_uri="postgres://autoctl_node@127.0.0.1:$mon/pg_auto_failover?sslmode=disable"
    for n in node1 node2; do
        port="$(node_port "$n")"
        autoctl "$dir/$n" create postgres --pgctl "$PG_BIN/pg_ctl" --hostname 127.0.0.1 \
            --pgport "$port" --name "$n" --dbname postgres --monitor "$monitor_uri" \
            --auth trust --no-ssl --replication-quorum true --candidate-priority 50 \
            >"$dir/$n.create.log" 2>&1 || die "$n creation failed: $(tail -5 "$dir/$n.create.log")"
        run_keeper "$n" "$dir/$n"
        if [ "$n" = node1 ]; then
            wait_for "node1 as primary" 120 sh -c \
                "[ \"\$(\"$PG_BIN/psql\" -X -At -h 127.0.0.1 -p $mon -U postgres -d pg_auto_failover \
                   -c \"SELECT reportedstate FROM pgautofailover.node WHERE nodename = 'node1'\")\" = single ]"
            wait_for "node1 to accept connections" 60 psql_at "$port" -c "SELECT 1"
            psql_at "$port" -c "CREATE EXTENSION pg_collab" \
                -c "CREATE ROLE $BRIDGE_USER LOGIN IN ROLE collab_bridge"
        fi
    done
    wait_for "a primary and a secondary" 180 sh -c \
        "[ \"\$(\"$PG_BIN/psql\" -X -At -h 127.0.0.1 -p $mon -U postgres -d pg_auto_failover \
           -c \"SELECT string_agg(reportedstate::text, ',' ORDER BY reportedstate) FROM pgautofailover.node\")\" = primary,secondary ]"
    echo "MONITOR_PORT=$mon"
    echo "NODE1_PORT=$(node_port node1)"
    echo "NODE2_PORT=$(node_port node2)"
    echo "URL=postgres://$BRIDGE_USER@127.0.0.1:$(node_port node1),127.0.0.1:$(node_port node2)/postgres?target_session_attrs=read-write"
    ;;
primary)
    psql_at "$(node_port monitor)" -d pg_auto_failover \
        -c "SELECT nodeport FROM pgautofailover.node WHERE reportedstate IN ('primary','wait_primary','single') AND goalstate = reportedstate"
    ;;
kill)
    port="${3:?usage: scripts/ha.sh kill DIR PORT}"
    for n in node1 node2; do
        [ "$(node_port "$n")" = "$port" ] || continue
        # The keeper first: it would restart the postmaster.
        kill_node "$n"
        echo "killed $n"
        exit 0
    done
    die "no node on port $port"
    ;;
stop)
    for n in node1 node2 monitor; do
        kill_node "$n"
    done
    ;;
*) die "unknown command $cmd" ;;
esac
