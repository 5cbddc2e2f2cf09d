#!/usr/bin/env bash
# Bridge benchmarks of issue #3, all figures in one run (recorded in bench/RESULTS.md):
#  1. propagation latency with stock Yjs clients (bench/js/propagation.mjs, one Node.js process)
#     against collab-bridge (every update committed to PostgreSQL first) and against the npm
#     y-websocket 1.5 reference server (in memory, nothing durable), side by side;
#  2. the same loads and higher ones with the Rust load generator (bench/src/bin/load.rs), which
#     also reports committed updates/s (from the database), delivered/s and the CPU used by each
#     process (bridge, PostgreSQL with its backends, reference server, generator);
#  3. the same bridge loads on a cluster with synchronous_commit=off (NOT durable: shows what the
#     WAL flush at commit costs on this disk; the product keeps the default);
#  4. the raw PostgreSQL ceiling of one row + NOTIFY per transaction (pgbench).
#  5. the same without NOTIFY (PostgreSQL serialises the commits of notifying transactions).
# Throwaway cluster with default settings; loopback; everything shares the machine's cores, so
# the latency loads run REPEATS times (default 3), reference and bridge interleaved: take medians.
# Before each run it waits (up to 2 min) while other work keeps more than QUIET_BUSY percent
# (default 20) of the CPU busy, as it shows up in every figure; each line of the load generator
# says the load average before and after (which includes the previous runs' own load).
# Usage: scripts/bench-bridge.sh [seconds per run, default 10]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
secs="${1:-10}"
repeats="${REPEATS:-3}"
quiet_busy="${QUIET_BUSY:-20}"
"$ROOT/scripts/setup.sh" >/dev/null
cargo build --release -p collab-bridge -p collab-bench --bins --quiet

bench_cluster bench
postmaster="$(head -1 "$dir/data/postmaster.pid")"
say "cluster: $("${psql[@]}" -Atc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'max_connections')")"

secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"
# Every generated client shares one token subject and one address: the bridges below lift the
# per-subject cap and the connect rate, which would (rightly) refuse such a crowd.

bport="$(free_port)"
"$CARGO_TARGET_DIR/release/collab-bridge" --listen "127.0.0.1:$bport" --database-url "$url" \
    --jwt-secret "$secret" --allow-query-token --log warn \
    --max-connections-per-subject 0 --connect-rate 0 >/dev/null &
bridge=$!
pids+=("$bridge")
rport="$(free_port)"
HOST=127.0.0.1 PORT="$rport" node tests/js/node_modules/y-websocket/bin/server.js >/dev/null &
reference=$!
pids+=("$reference")
sleep 2

load() { "$CARGO_TARGET_DIR/release/load" --seconds "$secs" "$@"; }
bridge_load() {
    load --url "ws://127.0.0.1:$bport/ws" --token "$token" --db "$url" \
        --cpu "bridge:$bridge" --cpu "postgres:$postmaster" --metrics "127.0.0.1:$bport" "$@"
}
reference_load() { load --url "ws://127.0.0.1:$rport" --cpu "reference:$reference" "$@"; }
# A short breather between runs, so that one run's tail does not land in the next; then, while
# other work keeps more than a fifth of the CPU busy, wait (at most 2 min).
busy_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
pause() {
    sleep 2
    local waited=0
    while [ "$(busy_pct)" -gt "$quiet_busy" ] && [ "$waited" -lt 120 ]; do
        sleep 4; waited=$((waited + 5))
    done
}

say "1. propagation with stock Yjs clients (Node.js harness): docs x clients, updates/s per client, $secs s"
for i in $(seq "$repeats"); do
    for load in "10 4 10" "50 2 20"; do
        read -r d m r <<<"$load"
        pause
        printf 'node %s x %s @ %s/s  reference:     [loadavg %s] ' "$d" "$m" "$r" "$(cut -d' ' -f1 /proc/loadavg)"
        node bench/js/propagation.mjs "ws://127.0.0.1:$rport" - "$d" "$m" "$r" "$secs"
        pause
        printf 'node %s x %s @ %s/s  collab-bridge: [loadavg %s] ' "$d" "$m" "$r" "$(cut -d' ' -f1 /proc/loadavg)"
        node bench/js/propagation.mjs "ws://127.0.0.1:$bport/ws" "$token" "$d" "$m" "$r" "$secs"
    done
done

say "2. Rust load generator: the same loads, then throughput (20,000 and 24,000 updates/s offered)"
rust_side_by_side() { # "docs clients rate"
    local d m r
    read -r d m r <<<"$1"
    pause; printf 'rust %s x %s @ %s/s  reference:     ' "$d" "$m" "$r"
    reference_load --docs "$d" --clients "$m" --rate "$r"
    pause; printf 'rust %s x %s @ %s/s  collab-bridge: ' "$d" "$m" "$r"
    bridge_load --docs "$d" --clients "$m" --rate "$r"
}
for i in $(seq "$repeats"); do
    for load in "10 4 10" "50 2 20"; do rust_side_by_side "$load"; done
done
for load in "100 2 50" "100 2 100" "100 2 120" "20 2 600"; do rust_side_by_side "$load"; done
say "bridge metrics (group commit and stages of the way of an update, over all runs so far)"
curl -s "http://127.0.0.1:$bport/metrics" | grep -E '^collab_bridge_(batch_size|transaction_documents|queue_seconds|commit_seconds|commit_to_notify_seconds|fanout_seconds|notify_lag_seconds)_(sum|count)' \
    | awk '{ v[$1] = $2 } END {
        split("batch_size transaction_documents queue_seconds commit_seconds commit_to_notify_seconds fanout_seconds notify_lag_seconds", n, " ");
        for (i = 1; i <= 7; i++) { c = v["collab_bridge_" n[i] "_count"]; s = v["collab_bridge_" n[i] "_sum"];
            if (c > 0) printf "  %-26s mean %s over %d\n", n[i], (n[i] ~ /seconds/ ? sprintf("%.3f ms", 1000 * s / c) : sprintf("%.2f", s / c)), c } }'

say "3. the bridge on the same cluster with synchronous_commit=off (not durable; comparison only)"
"${psql[@]}" -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
for load in "10 4 10" "50 2 20" "100 2 120"; do
    read -r d m r <<<"$load"
    pause; printf 'rust %s x %s @ %s/s  bridge, sync off: ' "$d" "$m" "$r"
    bridge_load --docs "$d" --clients "$m" --rate "$r"
done
"${psql[@]}" -c "ALTER SYSTEM RESET synchronous_commit" -c "SELECT pg_reload_conf()" >/dev/null

committed="$("${psql[@]}" -Atc "SELECT coalesce(sum(span), 0) FROM collab.updates")"
say "updates committed by collab-bridge during the runs: $committed"

say "4. raw PostgreSQL ceiling: one row + NOTIFY per transaction (pgbench, 8 clients, $secs s)"
"${psql[@]}" -c "CREATE TABLE raw (id bigserial PRIMARY KEY, b bytea)"
cat > "$dir/raw.sql" <<'SQL'
BEGIN;
INSERT INTO raw (b) VALUES ('\x0101c5b8d7a10f00040107636f6e74656e740178');
NOTIFY raw_bench, 'x';
COMMIT;
SQL
pause
as_pg "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$pgport" -U postgres -c 8 -j 2 -T "$secs" -f "$dir/raw.sql" postgres \
    | grep -E "^(tps|latency average|number of transactions actually)"
say "5. the same without NOTIFY"
grep -v NOTIFY "$dir/raw.sql" > "$dir/raw-quiet.sql"
pause
as_pg "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$pgport" -U postgres -c 8 -j 2 -T "$secs" -f "$dir/raw-quiet.sql" postgres \
    | grep -E "^(tps|latency average|number of transactions actually)"
say "machine at the end: $(machine)"
