#!/usr/bin/env bash
# Connection benchmarks of issue #11 (recorded in bench/RESULTS.md), against a release
# collab-bridge on a throwaway cluster (bench/src/bin/conns.rs):
#  1. resident memory per idle WebSocket connection at 1,000 and 10,000 connections (one bridge,
#     100 documents), the setup rate, and the memory left after they close;
#  2. a join storm: CLIENTS (default 150) raw y-websocket clients send sync step 1 at once for one
#     ~21 MB text document; how many are served, when the last is, the bridge's peak RSS, and the
#     p50/p99 of an unrelated light room meanwhile.
# Usage: scripts/bench-conns.sh [idle counts, default "1000 10000"]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
counts="${1:-1000 10000}"
clients="${CLIENTS:-150}"
"$ROOT/scripts/setup.sh" >/dev/null
cargo build --release -p collab-bridge -p collab-bench --bins --quiet
# 10,000 sockets on each side (each process has its own limit).
ulimit -n "$(ulimit -Hn)"

bench_cluster conns
secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"

start_bridge() {
    bport="$(free_port)"
    # One subject for every connection, all from loopback: lift the per-subject and per-address
    # limits, which would otherwise (rightly) refuse this benchmark.
    "$CARGO_TARGET_DIR/release/collab-bridge" --listen "127.0.0.1:$bport" --database-url "$url" \
        --jwt-secret "$secret" --log warn --max-connections 20000 \
        --max-connections-per-subject 0 --connect-rate 0 >/dev/null &
    bridge=$!
    pids+=("$bridge")
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$bport/healthz" >/dev/null && break; sleep 0.1; done
}
conns() { "$CARGO_TARGET_DIR/release/conns" "$@" --url "ws://127.0.0.1:$bport/ws" --token "$token" --pid "$bridge"; }

say "1. idle connections (a fresh bridge for each count)"
for n in $counts; do
    start_bridge
    conns idle --conns "$n" --docs 100
    kill "$bridge"; wait "$bridge" 2>/dev/null || true
done

say "2. join storm: $clients clients, one ~21 MB document, and a light room meanwhile"
# 7 inserts of 3 MB (collab.max_update_bytes is 4 MB).
for _ in 1 2 3 4 5 6 7; do
    "${psql[@]}" -c "SELECT collab.insert_text('big', 'content', 0, repeat('abcdefghij', 300000))" >/dev/null
done
say "document: $("${psql[@]}" -Atc "SELECT pg_size_pretty(octet_length(collab.state('big'))::bigint)")"
start_bridge
# The light room twice: inside the storm's client process (starved along with it) and from a
# process of its own, running through the storm.
conns light --light light-apart --seconds 12 &
apart=$!
sleep 1
conns storm --doc big --clients "$clients" --light light
wait "$apart"
