#!/usr/bin/env bash
# Installs everything pg_collab needs on a fresh Debian 12 machine that has only Rust, then
# builds and installs the extension into the system PostgreSQL 15 and builds the demo page
# (web/dist). Safe and fast to re-run. `--tests` also installs what only the tests need
# (Debian's Chromium for the browser tests, pg_auto_failover and PL/Proxy for the HA and
# sharding tests).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config)
if [ "${1:-}" = "--tests" ]; then
    APT_PACKAGES+=(chromium fonts-dejavu-core)
    # The HA and sharding tests (scripts/ha.sh, scripts/shards.sh): pg_auto_failover (monitor
    # extension and pg_autoctl) and PL/Proxy.
    APT_PACKAGES+=(postgresql-15-auto-failover pg-auto-failover-cli postgresql-15-plproxy)
fi

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

if ! grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
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
node_version="$(node -p 'process.versions.node')"
node_ok="$(node -p 'const [a, b] = process.versions.node.split(".").map(Number); a > 20 || (a === 20 && b >= 19)')"
[ "$node_ok" = "true" ] || die "Node.js $node_version is too old for Vite 7: install Node.js 20.19 or newer (e.g. NodeSource's nodejs package)"

npm_install() { # dir, what for
    local dir="$1"
    if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        say "installing npm packages for $2 (${dir#"$ROOT"/})"
        # `npm ci` refuses a lock that lacks other platforms' optional packages (rollup and
        # esbuild publish one per platform; registry mirrors may carry only this one), so fall
        # back to an install that follows the lock without rewriting it.
        (cd "$dir" && { npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
            npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null; })
    else
        say "npm packages for $2 present"
    fi
}
npm_install "$ROOT/tests/js" "the test clients"
# The in-memory relays of the latency benchmark (issue #15: @hocuspocus/server and provider).
npm_install "$ROOT/bench/js" "the benchmark relays"
npm_install "$ROOT/web" "the demo page"

# The page is rebuilt only when its sources changed since the last build.
web="$ROOT/web"
if [ ! -f "$web/dist/index.html" ] || [ -n "$(find "$web/src" "$web/index.html" "$web/vite.config.js" \
        "$web/package-lock.json" -newer "$web/dist/index.html" -print -quit)" ]; then
    say "building the demo page (Vite) into web/dist"
    (cd "$web" && npx vite build --logLevel error)
else
    say "demo page up to date (web/dist)"
fi

say "building and installing the pg_collab extension (release) into $($PG_CONFIG --pkglibdir)"
(cd "$ROOT/extension" && cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 | grep -E "^(error|warning)" || true)
test -f "$($PG_CONFIG --sharedir)/extension/pg_collab.control" || die "extension not installed"
say "setup done"
