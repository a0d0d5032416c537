#!/usr/bin/env bash
# The private PostgreSQL server of the ledger's tests (tests/test_ledger_postgres.py), run by
# `make test` (start) and `make postgres-stop` (stop); not a test itself.
#
#   PG_DIR=DIR PG_PORT=PORT tests/pg_server.sh start|stop
#
# start: installs Debian's postgresql with apt-get when no server binaries are found (as root;
# otherwise it says how, and the PostgreSQL tests then fail naming the URL they cannot reach),
# creates a cluster in DIR/data once (superuser `unlearnkit`, trust authentication, listening on
# 127.0.0.1:PORT only, no Unix socket), starts it unless it already runs, and creates the
# database `unlearnkit_test`. initdb and postgres refuse to run as root: as root they run as
# the `postgres` user. A second start, with the server up, costs one pg_isready call.
set -euo pipefail

action=${1:-start}
dir=${PG_DIR:?set PG_DIR to the folder of the test cluster}
port=${PG_PORT:-55432}

find_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return 0; fi
    return 1
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# where the cluster goes when PG_DIR is out of the postgres user's reach
fallback_dir() { echo "/tmp/unlearnkit-postgres-$port"; }

bin=$(find_bin || true)
if [ "$action" = stop ]; then
    for d in "$dir" "$(fallback_dir)"; do
        if [ -n "$bin" ] && [ -f "$d/data/postmaster.pid" ]; then
            as_pg "$bin/pg_ctl" -D "$d/data" -m fast -w stop >/dev/null
            echo "Stopped the ledger tests' PostgreSQL server ($d)"
        fi
    done
    exit 0
fi
[ "$action" = start ] || { echo "usage: $0 start|stop" >&2; exit 2; }

if [ -z "$bin" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "Installing postgresql for the ledger's PostgreSQL tests (apt-get)"
        apt-get update && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends postgresql
        bin=$(find_bin)
    else
        echo "make: PostgreSQL is not installed, so the ledger's PostgreSQL tests will fail:" \
             "install it with 'sudo apt-get install postgresql'"
        exit 0
    fi
fi

if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    exit 0  # already up (started by an earlier `make test`)
fi
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
        # a parent folder is private (a clone under /root, say): the cluster lives in /tmp
        dir=$(fallback_dir)
        echo "PostgreSQL for the ledger's tests: $PG_DIR is out of the postgres user's reach" \
             "(a private parent folder); the cluster lives in $dir"
        mkdir -p "$dir"
        chown postgres: "$dir"
    fi
fi
if [ ! -f "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir/data"
    as_pg "$bin/initdb" -D "$dir/data" -U unlearnkit --auth=trust -E UTF8 --locale=C \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
fi
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start >/dev/null \
    || { tail -20 "$dir/server.log" >&2; exit 1; }
if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U unlearnkit -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'unlearnkit_test'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U unlearnkit unlearnkit_test
fi
echo "PostgreSQL for the ledger's tests: postgresql+psycopg://unlearnkit@127.0.0.1:$port/unlearnkit_test"
