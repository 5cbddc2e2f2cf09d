#!/usr/bin/env bash
# Installs everything pg_collab needs on a fresh Debian 12 machine that has only Rust, then
# builds and installs the extension into the system PostgreSQL 15. Safe and fast to re-run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""; is_root || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
    say "Debian packages present"
fi

want="$(pgrx_version)"
[ -n "$want" ] || die "cannot read the pgrx version from Cargo.lock"
have="$(cargo pgrx --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
    say "installing cargo-pgrx $want (found '${have:-none}'); this takes a few minutes once"
    cargo install cargo-pgrx --version "=$want" --locked --quiet
else
    say "cargo-pgrx $want present"
fi

if ! grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$HOME/.pgrx/config.toml"; then
    say "pointing pgrx at the system PostgreSQL $PG_MAJOR ($PG_CONFIG)"
    cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" >/dev/null
fi

# Stock Yjs clients for the end-to-end tests (yjs, y-websocket) run on Node.js.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js and npm (Debian packages)"
    SUDO=""; is_root || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
js="$ROOT/tests/js"
if [ ! -f "$js/node_modules/.package-lock.json" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    say "installing npm packages for the test clients (tests/js)"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
else
    say "npm packages present"
fi

say "building and installing the pg_collab extension (release) into $($PG_CONFIG --pkglibdir)"
(cd "$ROOT/extension" && cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 | grep -E "^(error|warning)" || true)
test -f "$($PG_CONFIG --sharedir)/extension/pg_collab.control" || die "extension not installed"
say "setup done"
