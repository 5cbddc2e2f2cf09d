#!/usr/bin/env bash
# How the number of write lanes (--write-lanes) changes latency and throughput: for each lane
# count, a fresh throwaway cluster (default settings: fsync and synchronous_commit on) and a
# release bridge, then the Rust load generator at 50 docs x 2 clients x 20/s, 10 x 4 x 10/s and
# 100 x 2 x 120/s (the loads of scripts/bench-bridge.sh). Prints p50/p99, committed/s and the
# CPU of PostgreSQL per run. Results: bench/RESULTS.md ("Why two lanes").
# Usage: scripts/bench-lanes.sh [rounds, default 2] [lane counts, default "2 8 1 3"]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
rounds="${1:-2}"
counts="${2:-2 8 1 3}"
"$ROOT/scripts/setup.sh" >/dev/null
cargo build --release -p collab-bridge -p collab-bench --bins --quiet
secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"

one() { # lanes
    local dir pgport url bport bridge postmaster load d m r
    dir="$(mktemp -d /tmp/pg_collab-lanes.XXXXXX)"
    pgport="$(free_port)"
    start_throwaway_cluster "$dir" "$pgport"
    url="postgres://postgres@127.0.0.1:$pgport/postgres"
    postmaster="$(head -1 "$dir/data/postmaster.pid")"
    bport="$(free_port)"
    "$CARGO_TARGET_DIR/release/collab-bridge" --listen "127.0.0.1:$bport" --database-url "$url" \
        --jwt-secret "$secret" --allow-query-token --log warn --write-lanes "$1" \
        --max-connections-per-subject 0 --connect-rate 0 >/dev/null &
    bridge=$!
    sleep 2
    printf 'lanes=%s:' "$1"
    for load in "50 2 20" "10 4 10" "100 2 120"; do
        read -r d m r <<<"$load"
        sleep 2
        printf ' [%s x %s @ %s/s] ' "$d" "$m" "$r"
        "$CARGO_TARGET_DIR/release/load" --seconds 10 --url "ws://127.0.0.1:$bport/ws" --token "$token" \
            --db "$url" --cpu "bridge:$bridge" --cpu "postgres:$postmaster" --metrics "127.0.0.1:$bport" \
            --docs "$d" --clients "$m" --rate "$r" \
            | grep -o '"p50_ms.*p99_ms[^,]*\|"committed_per_s[^,]*\|"postgres_cpu_pct[^,]*' | tr '\n' ' '
    done
    echo
    kill "$bridge" 2>/dev/null || true
    wait "$bridge" 2>/dev/null || true
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
say "machine: $(machine)"
for _ in $(seq "$rounds"); do
    for l in $counts; do one "$l"; done
done
