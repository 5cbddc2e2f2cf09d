#!/usr/bin/env bash
# Makes a private, relocated copy of Debian's PostgreSQL 15 installation under DIR and prints its
# pg_config. PostgreSQL finds its share and lib directories relative to its programs, so builds of
# the extension installed there (COLLAB_PG_CONFIG=DIR/usr/lib/postgresql/15/bin/pg_config, with
# PGRX_HOME=DIR/pgrx) are seen only by clusters started from that copy: two checkouts can then
# install and test their own builds side by side. Headers stay Debian's (a symlink).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir="${1:?usage: scripts/private-pg.sh DIR}"
system=/usr/lib/postgresql/$PG_MAJOR
if [ ! -x "$dir/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" ]; then
    mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql" "$dir/usr/include" "$dir/pgrx"
    cp -a "$system" "$dir/usr/lib/postgresql/"
    cp -a "/usr/share/postgresql/$PG_MAJOR" "$dir/usr/share/postgresql/"
    ln -sfn /usr/include/postgresql "$dir/usr/include/postgresql"
    chmod -R a+rX "$dir"
fi
echo "$dir/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
