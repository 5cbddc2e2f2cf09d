#!/usr/bin/env bash
# Runs the benchmarks and prints their figures (record them in bench/RESULTS.md). Each starts
# its own throwaway PostgreSQL cluster; run on an otherwise idle machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
cargo build --release -p collab-bench --quiet
say "ingest: automerge-paper three ways, then reads and edits on the final document"
"$CARGO_TARGET_DIR/release/ingest"
