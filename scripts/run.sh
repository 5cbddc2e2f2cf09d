#!/usr/bin/env bash
# The main job: set everything up, start the project's PostgreSQL with pg_collab, then run
# collab-bridge in --dev mode (loopback only) in the foreground. Re-running is fast and harmless.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/db.sh" start
url="$("$ROOT/scripts/db.sh" url)"
bridge_url="$("$ROOT/scripts/db.sh" bridge-url)"   # a LOGIN role in collab_bridge only

say "building collab-bridge (release)"
cargo build --release -p collab-bridge --quiet
listen="${COLLAB_LISTEN:-127.0.0.1:8080}"

cat <<MSG

pg_collab is ready.
  database:   $url      (psql: scripts/db.sh psql; tour: scripts/db.sh psql -f sql/examples/tour.sql)
  bridge:     ws://$listen/ws/<document>   (y-websocket protocol)
  API:        http://$listen/api/docs   health: http://$listen/healthz   metrics: http://$listen/metrics
  stop:       Ctrl-C here; then scripts/db.sh stop

  Open the editor:  http://$listen/
  (sign in with any name; open the same document in a second window, or another browser, to
  edit together; try  scripts/db.sh psql -c "SELECT collab.insert_text('<document>', 'content', 0, 'Hi from SQL ')")

MSG
exec "$CARGO_TARGET_DIR/release/collab-bridge" --dev --listen "$listen" \
    --database-url "$bridge_url" --static-dir "$ROOT/web/dist"
