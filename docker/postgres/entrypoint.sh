#!/bin/sh
# First start (empty volume): a cluster with passwords required over TCP, and two databases, each
# owned by its own role: `prefect` (PREFECT_DB_PASSWORD) and `foldwise` (FOLDWISE_DB_PASSWORD).
# The superuser `postgres` has no password: it logs in only on the socket, inside this container.
# Later starts use what the volume holds; the passwords are read on the first start only.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${PREFECT_DB_PASSWORD:?must be set (docker/.env) on the first start}"
    : "${FOLDWISE_DB_PASSWORD:?must be set (docker/.env) on the first start}"
    initdb --username=postgres --encoding=UTF8 --auth-local=peer --auth-host=scram-sha-256
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl --wait --options="-c listen_addresses=''" start
    # Passwords as psql variables (:'name' quotes them): never spliced into SQL text.
    psql --set=ON_ERROR_STOP=1 --username=postgres --dbname=postgres \
        --set=prefect_password="$PREFECT_DB_PASSWORD" --set=foldwise_password="$FOLDWISE_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
CREATE ROLE foldwise LOGIN PASSWORD :'foldwise_password';
CREATE DATABASE foldwise OWNER foldwise;
SQL
    pg_ctl --wait --mode=fast stop
fi
exec postgres -c listen_addresses='*'
