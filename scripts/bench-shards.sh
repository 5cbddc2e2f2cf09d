#!/usr/bin/env bash
# Committed updates/s with one and with two pg_collab shards (scripts/shards.sh), and the CPU
# each shard's PostgreSQL spent per committed update. Each update is one
# `collab.insert_text` transaction (pgbench, CLIENTS connections per run, DUR seconds) on one
# of DOCS documents (16: fewer than a backend's document cache, collab.cache_documents = 32,
# so that one shard is not penalised by reloading documents), sent:
#   one shard     straight to shard 0 (all documents there: the unsharded baseline)
#   two shards    straight to the owning shard, as collab-bridge --shard-url does (two pgbench
#                 processes, each on its shard's documents, CLIENTS/2 connections each)
#   via proxy     through the PL/Proxy proxy database (the SQL route for applications)
# Throwaway clusters (fsync off, as in the tests): the cost measured is CPU, not the disk.
# Usage: scripts/bench-shards.sh   (DUR=15 CLIENTS=8 by default; PROFILE=1 also samples the
# CPU with perf during each run and prints the postgres functions that use most of it)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DUR="${DUR:-15}"
CLIENTS="${CLIENTS:-8}"
DOCS="${DOCS:-16}"

dir="$(mktemp -d /tmp/pg_collab-bench-shards.XXXXXX)"
cleanup() { bash "$ROOT/scripts/shards.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
say "machine: $(machine)"
out="$(bash "$ROOT/scripts/shards.sh" start "$dir" 2)"
eval "$out"
psql_at() { "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"; }

# DOCS document names and their shard (the proxy's hash).
names=(); shard_of=()
while IFS='|' read -r n s; do names+=("$n"); shard_of+=("$s"); done < <(
    psql_at "$PROXY_PORT" -c "SELECT 'bench-' || i, collab.shard_hash('bench-' || i) & 1 FROM generate_series(0, $DOCS - 1) i")

# A pgbench script over the given names.
script() { # file names...
    local f="$1"; shift
    local arr
    arr="$(printf "'%s'," "$@")"
    printf '\\set d random(1, %d)\nSELECT collab.insert_text((ARRAY[%s])[:d], '"'"'content'"'"', 0, '"'"'x'"'"');\n' \
        "$#" "${arr%,}" >"$f"
}
all="$dir/all.sql"; script "$all" "${names[@]}"
for s in 0 1; do
    mine=()
    for i in "${!names[@]}"; do [ "${shard_of[$i]}" = "$s" ] && mine+=("${names[$i]}"); done
    script "$dir/shard$s.sql" "${mine[@]}"
done

# CPU seconds (user + system) of a cluster so far: the postmaster, its reaped children, and
# the live ones.
ticks="$(getconf CLK_TCK)"
cluster_cpu() { # data dir
    local pm total=0 f
    pm="$(head -1 "$1/postmaster.pid")"
    read -ra f <"/proc/$pm/stat"
    total=$((f[13] + f[14] + f[15] + f[16]))
    for c in $(pgrep -P "$pm"); do
        read -ra f <"/proc/$c/stat" 2>/dev/null || continue
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
cpu_all() { for d in shard0 shard1 proxy; do cluster_cpu "$dir/$d/data"; done | paste -sd' '; }

run() { # label, then "port:script:clients" specs
    local label="$1"; shift
    local before after pids=() logs=() committed=0
    before=($(cpu_all))
    local perf_pid=""
    if [ -n "${PROFILE:-}" ]; then
        perf record -a -F 499 -g -o "$dir/perf.data" -- sleep "$DUR" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    for spec in "$@"; do
        IFS=: read -r port file clients <<<"$spec"
        log="$dir/pgbench.$RANDOM"; logs+=("$log")
        "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$clients" -j 1 -T "$DUR" \
            -f "$file" postgres >"$log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    [ -n "$perf_pid" ] && wait "$perf_pid"
    sleep 1 # let the backends exit and be reaped
    after=($(cpu_all))
    for log in "${logs[@]}"; do
        n="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")"
        [ -n "$n" ] || { cat "$log"; die "pgbench failed"; }
        committed=$((committed + n))
    done
    local per_s=$((committed / DUR)) s0 s1 px
    s0=$(((after[0] - before[0]) * 1000 / ticks)); s1=$(((after[1] - before[1]) * 1000 / ticks))
    px=$(((after[2] - before[2]) * 1000 / ticks))
    printf '%-12s %8d updates/s | CPU ms: shard0 %6d shard1 %6d proxy %6d | shard CPU per update %s us\n' \
        "$label" "$per_s" "$s0" "$s1" "$px" \
        "$(awk -v a="$((s0 + s1))" -v n="$committed" 'BEGIN { printf "%.1f", a * 1000 / n }')"
    if [ -n "$perf_pid" ]; then
        echo "  where postgres's CPU went (self time, % of all samples):"
        # (awk, not head: with pipefail, head closing the pipe would end the script)
        perf report -i "$dir/perf.data" --no-children --comm postgres --sort dso,symbol \
            --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | sed 's/ *- *- *$//' |
            awk 'NR <= 12 { print "  " $0 }'
    fi
}

say "$CLIENTS connections, $DUR s per run, $DOCS documents, one insert_text per transaction"
run "one shard" "$SHARD0_PORT:$all:$CLIENTS"
run "two shards" "$SHARD0_PORT:$dir/shard0.sql:$((CLIENTS / 2))" "$SHARD1_PORT:$dir/shard1.sql:$((CLIENTS / 2))"
run "via proxy" "$PROXY_PORT:$all:$CLIENTS"
