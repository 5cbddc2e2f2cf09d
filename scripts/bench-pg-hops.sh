#!/usr/bin/env bash
# What one small write costs inside PostgreSQL, hop by hop (issue #15's breakdown): pgbench,
# one client, prepared statements, on a throwaway cluster with default settings (fsync on):
# a round trip (SELECT 1), a one-row INSERT, the same with NOTIFY, and collab.apply_updates of
# one keystroke-sized update, each with synchronous_commit on (durable: the commit waits for the
# WAL flush) and off (no flush wait: what is left is CPU and the round trip).
# Usage: scripts/bench-pg-hops.sh [seconds per run, default 5]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
secs="${1:-5}"
bench_cluster pghops
"${psql[@]}" -c "CREATE TABLE raw (id bigserial PRIMARY KEY, b bytea)"
# A Yjs update inserting "x" into text `content` (client 12345): stored again by every call
# (integrating it again changes nothing, so this is the per-call cost without integration).
upd='\x0101b96000040107636f6e74656e74017800'
echo 'SELECT 1;' > "$dir/rt.sql"
echo "INSERT INTO raw (b) VALUES ('$upd');" > "$dir/insert.sql"
printf "BEGIN;\nINSERT INTO raw (b) VALUES ('%s');\nNOTIFY raw_bench, 'x';\nCOMMIT;\n" "$upd" > "$dir/notify.sql"
echo "SELECT collab.apply_updates('hops', ARRAY['$upd'::bytea], 'bench/1');" > "$dir/apply.sql"
chmod a+r "$dir"/*.sql
"${psql[@]}" -c "LISTEN collab" >/dev/null
# Back to back (the backend never sleeps), then at 400 calls/s (RATE), as at 10 x 4 x 10/s: the
# backend and the CPUs idle between calls, as they do at light load.
for rate in "" "${RATE:-400}"; do
for sync in on off; do
    for s in rt insert notify apply; do
        printf '%-7s synchronous_commit=%-3s %-9s ' "$s" "$sync" "${rate:-flat-out}"
        PGOPTIONS="-c synchronous_commit=$sync" as_pg "$PG_BIN/pgbench" -n -M prepared ${rate:+-R "$rate"} -h 127.0.0.1 -p "$pgport" \
            -U postgres -c 1 -T "$secs" -f "$dir/$s.sql" postgres 2>"$dir/err" \
            | awk '/^latency average/ { l = $4 } /^tps/ { t = $3 } END { printf "latency %s ms, %d tps\n", l, t }' || { tail -3 "$dir/err"; exit 1; }
    done
done
done
say "machine at the end: $(machine)"
