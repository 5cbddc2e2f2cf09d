#!/usr/bin/env bash
# "Saved" latency (issue #12, recorded in bench/RESULTS.md): per edit, from the local change to
# the bridge's acknowledgement that its transaction committed (Hocuspocus sync status, and the
# y-websocket saved message of `?saved=1`), next to the time until a client on the other protocol
# has the edit (tests/js/saved_latency.mjs, stock clients). Throwaway cluster with default
# (durable) settings, one release bridge, loopback.
# Usage: scripts/bench-saved.sh [edits per second, default 20] [seconds, default 10]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
rate="${1:-20}"
secs="${2:-10}"
"$ROOT/scripts/setup.sh" >/dev/null
cargo build --release -p collab-bridge --quiet

bench_cluster saved
secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"
bport="$(free_port)"
"$CARGO_TARGET_DIR/release/collab-bridge" --listen "127.0.0.1:$bport" --database-url "$url" \
    --jwt-secret "$secret" --allow-query-token --log warn >/dev/null &
pids+=("$!")
sleep 2
node tests/js/saved_latency.mjs "http://127.0.0.1:$bport" "$token" "$rate" "$secs"
