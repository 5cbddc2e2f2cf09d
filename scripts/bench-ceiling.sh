#!/usr/bin/env bash
# The throughput ceiling of issue #11: the Rust load generator (bench/src/bin/load.rs) offers
# more and more updates/s to one release collab-bridge on a throwaway cluster (100 documents x 2
# clients, RATES per client), and reports committed/s (from the database), delivered/s, latency
# and the CPU of the bridge and of PostgreSQL with its backends. Figures in bench/RESULTS.md.
# Usage: scripts/bench-ceiling.sh [seconds per run, default 10] (RATES="120 150 200 250")
# PROCS=N (default 1) spreads the clients over N generator processes started together (each
# 100/N documents x 2 clients; one generator alone saturates a core near 60k sent/s); then the
# line per rate sums sent/s and committed/s over them and gives each process's p50/p99.
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
procs="${PROCS:-1}"
for r in $rates; do
    printf 'rust 100 x 2 @ %s/s (offered %s/s) [loadavg %s]: ' "$r" "$((200 * r))" "$(cut -d' ' -f1 /proc/loadavg)"
    if [ "$procs" = 1 ]; then
        "$CARGO_TARGET_DIR/release/load" --seconds "$secs" --url "ws://127.0.0.1:$bport/ws" \
            --token "$token" --db "$url" --cpu "bridge:$bridge" --cpu "postgres:$postmaster" \
            --metrics "127.0.0.1:$bport" --docs 100 --clients 2 --rate "$r"
    else
        gens=()
        for i in $(seq 0 $((procs - 1))); do
            extra=()
            [ "$i" = 0 ] && extra=(--cpu "bridge:$bridge" --cpu "postgres:$postmaster" --metrics "127.0.0.1:$bport")
            "$CARGO_TARGET_DIR/release/load" --seconds "$secs" --url "ws://127.0.0.1:$bport/ws" \
                --token "$token" --db "$url" "${extra[@]}" --docs $((100 / procs)) --clients 2 \
                --rate "$r" >"$dir/gen.$i" &
            gens+=($!)
        done
        wait "${gens[@]}"
        node -e '
const fs = require("fs"); const [dir, n] = [process.argv[1], Number(process.argv[2])];
const runs = [...Array(n).keys()].map(i => JSON.parse(fs.readFileSync(`${dir}/gen.${i}`, "utf8")));
const sum = (k) => runs.reduce((a, j) => a + (j[k] || 0), 0);
console.log(JSON.stringify({ procs: n, sent_per_s: sum("sent_per_s"), committed_per_s: sum("committed_per_s"),
  delivered: sum("delivered"), expected: sum("expected"), committed_total: sum("committed_total"),
  p50_ms: runs.map(j => j.p50_ms), p99_ms: runs.map(j => j.p99_ms), load_cpu_pct: runs.map(j => j.load_cpu_pct),
  bridge_cpu_pct: runs[0].bridge_cpu_pct, postgres_cpu_pct: runs[0].postgres_cpu_pct, bridge_stages: runs[0].bridge_stages }))
' "$dir" "$procs"
    fi
    sleep 3
done
