#!/usr/bin/env bash
# The main job: set everything up, start the project's PostgreSQL with pg_collab, and say how
# to connect. Re-running is fast and harmless.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/db.sh" start
url="$("$ROOT/scripts/db.sh" url)"
cat <<MSG

pg_collab is ready.
  database:  $url
  psql:      scripts/db.sh psql        (then e.g.  SELECT collab.insert_text('hello', 'content', 0, 'Hi!');)
  tour:      scripts/db.sh psql -f sql/examples/tour.sql
  stop:      scripts/db.sh stop
MSG
