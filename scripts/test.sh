#!/usr/bin/env bash
# Runs every test on a fresh Debian machine (after installing what is missing): formatting and
# lints, unit tests, the extension's #[pg_test]s in a throwaway cluster, and the end-to-end tests,
# which start their own throwaway clusters. CI runs exactly this (.ci/run).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh" --tests

say "formatting (cargo fmt --check)"
cargo fmt --all -- --check

say "lints (clippy -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy -p pg_collab --features pg_test --all-targets --quiet -- -D warnings

say "the page's reconnection schedule (node --test)"
node --test web/tests/backoff.test.mjs

say "extension: unit tests and #[pg_test]s in a throwaway cluster"
pgdata="$(mktemp -d /tmp/pg_collab-pgrx.XXXXXX)"
trap 'rm -rf "$pgdata"' EXIT
runas=()
if is_root; then
    chown postgres "$pgdata"
    runas=(--runas postgres)
fi
(cd extension && cargo pgrx test "pg$PG_MAJOR" "${runas[@]}" --pgdata "$pgdata/data")

# `cargo pgrx test` installed its test build; put the release build back for what follows.
say "reinstalling the release build of the extension"
(cd extension && cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null 2>&1)

say "trace loader, end-to-end tests of the extension and of collab-bridge (real PostgreSQL, real bridges, stock Yjs clients, headless Chromium)"
cargo test -p collab-scan -p collab-trace -p collab-tests -p collab-bridge -p collab-bench
say "all tests passed"
