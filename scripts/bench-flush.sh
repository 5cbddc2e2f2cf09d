#!/usr/bin/env bash
# What a WAL flush costs on this machine when the disk was idle and when it is busy (issue
# #15's light-load floor): one session doing one-row INSERTs (synchronous_commit on, so each
# commit calls fdatasync on the WAL), first back to back, then with a pause between commits
# as at light load, with the backend's fdatasync calls timed by strace -T. Prints the median
# and p90 per pace.
# Usage: scripts/bench-flush.sh [inserts per phase, default 200]
#   PACES (default "0 10"): pauses between commits in ms, one phase each (0: back to back).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
n="${1:-200}"
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)" >&2; exit 1; }
bench_cluster flush
"${psql[@]}" -c "CREATE TABLE raw (id bigserial PRIMARY KEY, b bytea)"
for ms in ${PACES:-0 10}; do
    phase="back-to-back"
    pause=""
    if [ "$ms" != 0 ]; then
        phase="every ${ms} ms"
        pause="SELECT pg_sleep($ms / 1000.0);"
    fi
    { echo "SELECT pg_sleep(1);"; for _ in $(seq 1 "$n"); do echo "INSERT INTO raw (b) VALUES ('x'); $pause"; done; } > "$dir/flush-$ms.sql"
    chmod a+r "$dir/flush-$ms.sql"
    as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$pgport" -U postgres -X -q -f "$dir/flush-$ms.sql" postgres >/dev/null &
    client=$!
    sleep 0.5
    backend="$("${psql[@]}" -Atc "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(1)%' AND pid <> pg_backend_pid()")"
    strace -T -e trace=fdatasync -p "$backend" -o "$dir/flush-$ms.trace" &
    tracer=$!
    wait "$client"
    kill "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    grep -o '<[0-9.]*>' "$dir/flush-$ms.trace" | tr -d '<>' | sort -n |
        awk -v p="$phase" '{ v[NR] = $1 * 1000 } END { if (NR == 0) { print p ": no fdatasync seen"; exit }
            printf "%-14s fdatasync of the WAL: median %.3f ms, p90 %.3f ms (%d calls)\n", p, v[int(NR * 0.5) + 1], v[int(NR * 0.9) + 1], NR }'
done
say "machine at the end: $(machine)"
