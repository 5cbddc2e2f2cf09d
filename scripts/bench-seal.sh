#!/usr/bin/env bash
# What sealed notifications, rights checks and the bridge's own role cost the bridge: the Rust
# load generator through one collab-bridge on a throwaway cluster of the installed extension.
# Usage: scripts/bench-seal.sh BIN_DIR [ROLE]   (BIN_DIR holds collab-bridge and load; ROLE:
# log the bridge in as a LOGIN role in collab_bridge instead of the superuser). Run it with the
# binaries and extension of each version to compare (bench/RESULTS.md says how). Environment:
# LOADS="docs clients rate,..." (default: 3 x 10 4 10, 3 x 50 2 20, 100 2 120, 20 2 600),
# SECS (10), SYNC_OFF=1 (synchronous_commit off), BRIDGE_LOG (print the bridge's log).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bin="$1"
role="${2:-}"
secs="${SECS:-10}"
bench_cluster seal
if [ -n "${SYNC_OFF:-}" ]; then   # not durable: takes the disk's flush time out of the figures
    "${psql[@]}" -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
fi
say "extension $("${psql[@]}" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_collab'"), synchronous_commit $("${psql[@]}" -Atc "SHOW synchronous_commit")"
user=postgres
if [ -n "$role" ]; then
    "${psql[@]}" -c "CREATE ROLE $role LOGIN IN ROLE collab_bridge"
    user="$role"
fi
secret="bench-secret-bench-secret-bench-secret"
token="$(write_all_token "$secret")"
bport="$(free_port)"
"$bin/collab-bridge" --listen "127.0.0.1:$bport" --database-url "postgres://$user@127.0.0.1:$pgport/postgres" \
    --jwt-secret "$secret" --allow-query-token --log "${BRIDGE_LOG:-warn}" >"$dir/bridge.log" 2>&1 &
pids+=("$!")
sleep 2
loads=("10 4 10" "10 4 10" "10 4 10" "50 2 20" "50 2 20" "50 2 20" "100 2 120" "20 2 600")
[ -n "${LOADS:-}" ] && IFS=, read -ra loads <<<"$LOADS"   # e.g. LOADS="10 4 10,50 2 20"
for load in "${loads[@]}"; do
    read -r d m r <<<"$load"
    sleep 2
    printf 'rust %s x %s @ %s/s [loadavg %s] ' "$d" "$m" "$r" "$(cut -d' ' -f1 /proc/loadavg)"
    "$bin/load" --seconds "$secs" --url "ws://127.0.0.1:$bport/ws" --token "$token" --db "$url" \
        --docs "$d" --clients "$m" --rate "$r"
done
[ -z "${BRIDGE_LOG:-}" ] || cat "$dir/bridge.log"
