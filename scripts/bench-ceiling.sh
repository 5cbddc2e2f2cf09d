#!/usr/bin/env bash
# The throughput ceiling of issue #11: the Rust load generator (bench/src/bin/load.rs) offers
# more and more updates/s to one release collab-bridge on a throwaway cluster (100 documents x 2
# clients, RATES per client), and reports committed/s (from the database), delivered/s, latency
# and the CPU of the bridge and of PostgreSQL with its backends. Figures in bench/RESULTS.md.
# Usage: scripts/bench-ceiling.sh [seconds per run, default 10] (RATES="120 150 200 250")
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
secs="${1:-10}"
rates="${RATES:-120 150 200 250}"
"$ROOT/scripts/setup.sh" >/dev/null
cargo build --release -p collab-bridge -p collab-bench --bins --quiet
bench_cluster ceiling
postmaster="$(head -1 "$dir/data/postmaster.pid")"
secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"
bport="$(free_port)"
"$CARGO_TARGET_DIR/release/collab-bridge" --listen "127.0.0.1:$bport" --database-url "$url" \
    --jwt-secret "$secret" --allow-query-token --log warn --max-connections-per-subject 0 \
    --connect-rate 0 >/dev/null &
bridge=$!
pids+=("$bridge")
sleep 2
for r in $rates; do
    printf 'rust 100 x 2 @ %s/s (offered %s/s) [loadavg %s]: ' "$r" "$((200 * r))" "$(cut -d' ' -f1 /proc/loadavg)"
    "$CARGO_TARGET_DIR/release/load" --seconds "$secs" --url "ws://127.0.0.1:$bport/ws" \
        --token "$token" --db "$url" --cpu "bridge:$bridge" --cpu "postgres:$postmaster" \
        --metrics "127.0.0.1:$bport" --docs 100 --clients 2 --rate "$r"
    sleep 3
done
