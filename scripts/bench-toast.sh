#!/usr/bin/env bash
# TOAST compression of checkpoints: the final state of each editing trace (../shared/traces,
# replayed with stock yjs) stored with pglz (PostgreSQL's default), lz4 and no compression in a
# throwaway cluster; prints the stored size and the time to write and to read back 50 copies of
# each. The figures are in bench/RESULTS.md ("Checkpoint compression").
set -euo pipefail
source "$(dirname "$0")/lib.sh"
traces="${COLLAB_TRACES:-$ROOT/../shared/traces}"
bench_cluster toast
node "$ROOT/bench/js/trace-states.mjs" "$traces" "$dir"
"${psql[@]}" -c "CREATE TABLE c_pglz (name text, state bytea COMPRESSION pglz);
                 CREATE TABLE c_lz4 (name text, state bytea COMPRESSION lz4);
                 CREATE TABLE c_none (name text, state bytea);
                 ALTER TABLE c_none ALTER state SET STORAGE EXTERNAL;"
is_root && chown postgres "$dir"/*.state
for f in "$dir"/*.state; do
    n="$(basename "$f" .state)"
    for t in c_pglz c_lz4 c_none; do echo "INSERT INTO $t VALUES ('$n', pg_read_binary_file('$f'));"; done
done > "$dir/insert.sql"
"${psql[@]}" -f "$dir/insert.sql"
"${psql[@]}" -c "SELECT p.name AS trace, octet_length(p.state) AS raw, pg_column_size(p.state) AS pglz,
                        pg_column_size(l.state) AS lz4
                 FROM c_pglz p JOIN c_lz4 l USING (name) ORDER BY 1"
for round in 1 2 3; do
    echo "round $round (50 copies of every state; ms):"
    "${psql[@]}" -c '\timing on' \
        -c "SELECT sum(get_byte(state, octet_length(state) - 1)) FROM c_pglz, generate_series(1, 50)" \
        -c "SELECT sum(get_byte(state, octet_length(state) - 1)) FROM c_lz4, generate_series(1, 50)" \
        -c "SELECT sum(get_byte(state, octet_length(state) - 1)) FROM c_none, generate_series(1, 50)" \
        -c "CREATE TEMP TABLE w_pglz (s bytea COMPRESSION pglz); CREATE TEMP TABLE w_lz4 (s bytea COMPRESSION lz4)" \
        -c "INSERT INTO w_pglz SELECT state FROM c_none, generate_series(1, 50)" \
        -c "INSERT INTO w_lz4 SELECT state FROM c_none, generate_series(1, 50)" |
        grep Time | awk 'NR==1{r="read pglz "} NR==2{r="read lz4 "} NR==3{r="read none "} NR==4{next} NR==5{r="write pglz "} NR==6{r="write lz4 "} {print "  " r $2}'
done
