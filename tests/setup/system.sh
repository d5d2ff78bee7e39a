#!/usr/bin/env bash
# What the test suite needs outside Python, installed and started idempotently.
#
#   PostgreSQL   Debian's server, a cluster on 127.0.0.1:5432, a database `test`, and trust
#                for the `postgres` user on loopback only (the suite's URL has no password).
#   Neo4j        built from Maven Central by tests/neo4j_server (Java 17 + Maven); the pytest
#                session starts and stops the server itself.
#   Chromium     the viewer's browser tests drive Debian's build (never `playwright install`).
#   compose      `docker compose config` or Debian's `docker-compose` parses the compose file.
#
# As root (CI, the project's machines) it installs what is missing with apt-get. As another
# user it only reports what is missing: the tests that need it then skip with that reason,
# except in CI, where they fail.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; } ||
    missing+=(docker-compose)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)

is_root() { [ "$(id -u)" = 0 ]; }

if [ ${#missing[@]} -gt 0 ]; then
    if is_root; then
        echo "system.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "system.sh: missing ${missing[*]} (not root: install them to run every test)" >&2
    fi
fi

start_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 || return 0
    if pg_isready -q -h 127.0.0.1 -p 5432; then
        :
    elif is_root; then
        local version
        version=$(ls /usr/lib/postgresql | sort -n | tail -1)
        pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main" ||
            pg_createcluster "$version" main >/dev/null
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        local rule="host all postgres 127.0.0.1/32 trust"
        if ! grep -qxF "$rule" "$hba"; then
            # First matching rule wins: the trust line goes on top. Loopback only.
            { echo "# circuitreg tests: the local superuser without a password, loopback only"
              echo "$rule"; cat "$hba"; } >"$hba.new"
            mv "$hba.new" "$hba"
            chown postgres:postgres "$hba"
        fi
        pg_ctlcluster "$version" main start 2>/dev/null || pg_ctlcluster "$version" main reload
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    else
        echo "system.sh: PostgreSQL is not running on 127.0.0.1:5432 (not root)" >&2
        return 0
    fi
    if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" |
        grep -qx 1; then
        psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE test'
    fi
}

start_postgres
