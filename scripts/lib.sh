# Shared by the project's scripts: paths, logging, and running commands as the cluster owner.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pg_collab/target}"
PG_MAJOR=15
# The PostgreSQL installation to build against, install into and test with. Default: Debian's.
# Another (e.g. a relocated copy, so that two checkouts can each install their own build of the
# extension) is chosen by COLLAB_PG_CONFIG; the Rust tests read the same variable.
PG_CONFIG="${COLLAB_PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}"
export COLLAB_PG_CONFIG="$PG_CONFIG"
PG_BIN="$("$PG_CONFIG" --bindir 2>/dev/null || echo "/usr/lib/postgresql/$PG_MAJOR/bin")"
# pgrx keeps its configuration (which pg_config is pg15) in PGRX_HOME (default ~/.pgrx).
PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# PostgreSQL refuses to run as root, so clusters belong to the 'postgres' user when we are root.
as_pg() {
    if is_root; then sudo -u postgres -H -- "$@"; else "$@"; fi
}

pgrx_version() {
    awk '/^name = "pgrx"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

# For the benchmark scripts --------------------------------------------------------------------

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The CPU and its load, for the record.
machine() { echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

# A throwaway cluster with default settings in DIR/data, on loopback PORT, with pg_collab
# created. Stop it with: as_pg "$PG_BIN/pg_ctl" -D DIR/data -m immediate stop
# BENCH_PG_OPTS: extra server options (e.g. "-c synchronous_commit=off" for a comparison).
start_throwaway_cluster() { # dir port
    is_root && chown postgres "$1"
    as_pg "$PG_BIN/initdb" -D "$1/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" -w -l "$1/log" \
        -o "-p $2 -k $1 -c listen_addresses=127.0.0.1 ${BENCH_PG_OPTS:-}" start >/dev/null
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$2" -U postgres -c "CREATE EXTENSION pg_collab"
}

# A benchmark's throwaway cluster in a new DIR (/tmp/pg_collab-NAME.*): prints the machine,
# starts the cluster and sets dir, pgport, url and psql (an array); processes added to pids are
# killed at exit, when the cluster is stopped and dir removed.
bench_cluster() { # name
    dir="$(mktemp -d "/tmp/pg_collab-$1.XXXXXX")"
    pids=()
    trap bench_cleanup EXIT
    say "machine: $(machine)"
    pgport="$(free_port)"
    start_throwaway_cluster "$dir" "$pgport"
    psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$pgport" -U postgres)
    url="postgres://postgres@127.0.0.1:$pgport/postgres"
}

bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

# An HS256 token signed with SECRET granting write on every document for an hour.
write_all_token() { # secret
    node -e '
const c = require("crypto"); const b = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const h = b({alg: "HS256", typ: "JWT"}), p = b({sub: "bench", docs: {"*": "write"}, exp: Math.floor(Date.now()/1000) + 3600});
console.log(h + "." + p + "." + c.createHmac("sha256", process.argv[1]).update(h + "." + p).digest("base64url"));
' "$1"
}
