#!/usr/bin/env bash
# Light-load latency of issue #15, side by side in one run: collab-bridge (durable: every update
# committed to PostgreSQL with fsync before anyone gets it) against the npm y-websocket 1.5.4
# reference server and @hocuspocus/server 4.7 with its provider (both in memory; bench/js), and
# the bridge's own /hocuspocus endpoint with the same provider,
# with stock Yjs clients (bench/js/propagation.mjs, in PROCS
# Node.js processes) and with the Rust load generator, at the loads of the issue. Each bridge run
# also prints where the time went in the bridge (queue for the lane, write transaction, commit →
# frame written; means and the histogram bucket holding p50/p99), from its /metrics.
# Throwaway cluster with default settings (fsync on); everything on this machine's cores.
# Usage: scripts/bench-latency.sh [seconds per run, default 10]
#   ROUNDS (default 2): rounds, reference and bridge interleaved in each;
#   LOADS (default "10 4 10,50 2 20,100 5 10"): docs clients rate-per-client;
#   PROCS (default 4): Node.js harness processes per run (each takes a share of the documents);
#   BRIDGE_BIN: the collab-bridge binary to measure (default: this checkout's release build);
#   BRIDGE_ARGS: more arguments for it (e.g. "--search-lag-ms 3600000" to take re-indexing out);
#   HARNESS (default "node rust"): which harnesses to run;
#   RELAY_DELAYS_US (default none): also measure the y-websocket relay behind bench's `delay`
#     proxy, which holds what clients send for that many microseconds (one run per value, e.g.
#     "1000"): the relay as it would be if each update paid that much for being made durable.
#     Only at loads of at most 2,000 updates/s: above that the proxy's threads (three per
#     connection) become the bottleneck and measure themselves.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
secs="${1:-10}"
rounds="${ROUNDS:-2}"
procs="${PROCS:-4}"
harness="${HARNESS:-node rust}"
IFS=',' read -r -a loads <<<"${LOADS:-10 4 10,50 2 20,100 5 10}"
if [ -z "${BRIDGE_BIN:-}" ]; then
    "$ROOT/scripts/setup.sh" >/dev/null
    cargo build --release -p collab-bridge -p collab-bench --bins --quiet
fi
bridge_bin="${BRIDGE_BIN:-$CARGO_TARGET_DIR/release/collab-bridge}"

bench_cluster latency
postmaster="$(head -1 "$dir/data/postmaster.pid")"
say "cluster: $("${psql[@]}" -Atc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method')")"
say "bridge: $bridge_bin ($(stat -c %y "$bridge_bin" | cut -d. -f1))"

secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"
bport="$(free_port)"
read -r -a bridge_args <<<"${BRIDGE_ARGS:-}"
"$bridge_bin" --listen "127.0.0.1:$bport" --database-url "$url" \
    --jwt-secret "$secret" --allow-query-token --log warn \
    --max-connections-per-subject 0 --connect-rate 0 "${bridge_args[@]}" >/dev/null &
bridge=$!
pids+=("$bridge")
rport="$(free_port)"
HOST=127.0.0.1 PORT="$rport" node tests/js/node_modules/y-websocket/bin/server.js >/dev/null &
reference=$!
pids+=("$reference")
# @hocuspocus/server 4.7 in memory, measured with its own provider (Node.js harness only: the
# Rust generator speaks the y-websocket protocol).
hport="$(free_port)"
(cd bench/js && PORT="$hport" exec node hocuspocus-server.mjs) >/dev/null &
pids+=($!)
# The relay behind the delaying proxy, one port per delay.
declare -A dport
for us in ${RELAY_DELAYS_US:-}; do
    dport[$us]="$(free_port)"
    "$CARGO_TARGET_DIR/release/delay" --listen "127.0.0.1:${dport[$us]}" --to "127.0.0.1:$rport" --delay-us "$us" &
    pids+=($!)
done
sleep 2

# The Node.js harness in $procs processes started together: the documents are split between
# them (as browsers are separate processes); prints the merged p50/p99 over all deliveries.
node_run() { # base token docs clients rate
    local base="$1" tok="$2" d="$3" m="$4" r="$5" n i share
    n=$(( procs < d ? procs : d ))
    local out="$dir/node.$$"
    local harnesses=()
    for i in $(seq 0 $((n - 1))); do
        share=$(( d / n + (i < d % n ? 1 : 0) ))
        LATENCIES="$out.$i.lat" node bench/js/propagation.mjs "$base" "$tok" "$share" "$m" "$r" "$secs" >"$out.$i.json" &
        harnesses+=($!)
    done
    wait "${harnesses[@]}"
    node -e '
const fs = require("fs"); const [out, n] = [process.argv[1], Number(process.argv[2])];
let lat = [], delivered = 0, expected = 0, cpu = 0;
for (let i = 0; i < n; i++) {
  const j = JSON.parse(fs.readFileSync(`${out}.${i}.json`, "utf8"));
  delivered += j.delivered; expected += j.expected; cpu += j.harness_cpu_pct;
  lat = lat.concat(JSON.parse(fs.readFileSync(`${out}.${i}.lat`, "utf8")));
}
lat.sort((a, b) => a - b);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
console.log(JSON.stringify({ procs: n, delivered, expected, p50_ms: +q(0.5).toFixed(2), p99_ms: +q(0.99).toFixed(2), harness_cpu_pct: cpu }));
' "$out" "$n"
    rm -f "$out".*
}

stages() { # the bridge's stage histograms, sums and counts
    curl -s "http://127.0.0.1:$bport/metrics"
}

for round in $(seq "$rounds"); do
    for load in "${loads[@]}"; do
        read -r d m r <<<"$load"
        delays="${RELAY_DELAYS_US:-}"
        [ $((d * m * r)) -le 2000 ] || delays=""
        for h in $harness; do
            sleep 2
            case "$h" in
            node)
                printf 'round %s node(%s procs) %s x %s @ %s/s reference:     ' "$round" "$procs" "$d" "$m" "$r"
                node_run "ws://127.0.0.1:$rport" - "$d" "$m" "$r"
                for us in $delays; do
                    sleep 2
                    printf 'round %s node(%s procs) %s x %s @ %s/s reference+%sus: ' "$round" "$procs" "$d" "$m" "$r" "$us"
                    node_run "ws://127.0.0.1:${dport[$us]}" - "$d" "$m" "$r"
                done
                sleep 2
                printf 'round %s node(%s procs) %s x %s @ %s/s collab-bridge: ' "$round" "$procs" "$d" "$m" "$r"
                node_run "ws://127.0.0.1:$bport/ws" "$token" "$d" "$m" "$r"
                sleep 2
                printf 'round %s node(%s procs) %s x %s @ %s/s hocuspocus:    ' "$round" "$procs" "$d" "$m" "$r"
                PROVIDER=hocuspocus node_run "ws://127.0.0.1:$hport" - "$d" "$m" "$r"
                sleep 2
                # The bridge's own Hocuspocus endpoint, with the same provider clients.
                printf 'round %s node(%s procs) %s x %s @ %s/s bridge-hocuspocus: ' "$round" "$procs" "$d" "$m" "$r"
                PROVIDER=hocuspocus node_run "ws://127.0.0.1:$bport/hocuspocus" "$token" "$d" "$m" "$r"
                ;;
            rust)
                printf 'round %s rust %s x %s @ %s/s reference:     ' "$round" "$d" "$m" "$r"
                "$CARGO_TARGET_DIR/release/load" --seconds "$secs" --url "ws://127.0.0.1:$rport" \
                    --cpu "reference:$reference" --docs "$d" --clients "$m" --rate "$r"
                for us in $delays; do
                    sleep 2
                    printf 'round %s rust %s x %s @ %s/s reference+%sus: ' "$round" "$d" "$m" "$r" "$us"
                    "$CARGO_TARGET_DIR/release/load" --seconds "$secs" --url "ws://127.0.0.1:${dport[$us]}" \
                        --cpu "reference:$reference" --docs "$d" --clients "$m" --rate "$r"
                done
                sleep 2
                printf 'round %s rust %s x %s @ %s/s collab-bridge: ' "$round" "$d" "$m" "$r"
                "$CARGO_TARGET_DIR/release/load" --seconds "$secs" --url "ws://127.0.0.1:$bport/ws" \
                    --token "$token" --db "$url" --cpu "bridge:$bridge" --cpu "postgres:$postmaster" \
                    --metrics "127.0.0.1:$bport" --docs "$d" --clients "$m" --rate "$r"
                ;;
            esac
        done
    done
done
say "bridge counters: $(stages | grep -E '^collab_bridge_(delivered_at_commit|notifications|catchup_fetches|updates_out)_total' | tr '\n' ' ')"
say "machine at the end: $(machine)"
