#!/usr/bin/env bash
# End-to-end propagation benchmark: the same harness (bench/js/propagation.mjs, stock Yjs clients)
# against collab-bridge (every update committed to PostgreSQL first) and against the npm
# y-websocket 1.5 reference server (in memory, nothing durable), side by side; plus the raw
# PostgreSQL ceiling of one row + NOTIFY per transaction (pgbench). Throwaway cluster; loopback.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" >/dev/null
cargo build --release -p collab-bridge --quiet

dir="$(mktemp -d /tmp/pg_collab-bench.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
is_root && chown postgres "$dir"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pgport="$(port)"
as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
    -o "-p $pgport -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$pgport" -U postgres)
"${psql[@]}" -c "CREATE EXTENSION pg_collab"
url="postgres://postgres@127.0.0.1:$pgport/postgres"

secret="bench-secret-bench-secret-bench-secret"
token="$(node -e '
const c = require("crypto"); const b = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const h = b({alg: "HS256", typ: "JWT"}), p = b({sub: "bench", docs: {"*": "write"}, exp: Math.floor(Date.now()/1000) + 3600});
console.log(h + "." + p + "." + c.createHmac("sha256", process.argv[1]).update(h + "." + p).digest("base64url"));
' "$secret")"

bport="$(port)"
"$CARGO_TARGET_DIR/release/collab-bridge" --listen "127.0.0.1:$bport" --database-url "$url" \
    --jwt-secret "$secret" --allow-query-token --log warn &
pids+=($!)
rport="$(port)"
HOST=127.0.0.1 PORT="$rport" node tests/js/node_modules/y-websocket/bin/server.js >/dev/null &
pids+=($!)
sleep 2

loads=("10 4 10 10" "50 2 20 10" "100 2 50 10")
for load in "${loads[@]}"; do
    read -r d m r s <<<"$load"
    say "load: $d docs x $m clients, $r updates/s per client, $s s"
    printf 'reference y-websocket: '; node bench/js/propagation.mjs "ws://127.0.0.1:$rport" - $d $m $r $s
    printf 'collab-bridge:         '; node bench/js/propagation.mjs "ws://127.0.0.1:$bport/ws" "$token" $d $m $r $s
done
committed="$("${psql[@]}" -Atc "SELECT count(*) FROM collab.updates")"
say "updates committed by collab-bridge during the runs: $committed"

say "raw PostgreSQL ceiling: one row + NOTIFY per transaction (pgbench, 8 clients, 10 s)"
"${psql[@]}" -c "CREATE TABLE raw (id bigserial PRIMARY KEY, b bytea)"
cat > "$dir/raw.sql" <<'SQL'
BEGIN;
INSERT INTO raw (b) VALUES ('\x0101c5b8d7a10f00040107636f6e74656e740178');
NOTIFY raw_bench, 'x';
COMMIT;
SQL
as_pg "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$pgport" -U postgres -c 8 -j 2 -T 10 -f "$dir/raw.sql" postgres \
    | grep -E "^(tps|latency average|number of transactions actually)"
