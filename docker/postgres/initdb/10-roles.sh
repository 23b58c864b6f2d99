#!/bin/sh
# Run once by the postgres image when its volume is empty (docker-entrypoint-initdb.d), as POSTGRES_USER — the
# superuser, used for this setup only. Creates the roles of daily work (the same as `mbyn postgres up` makes
# locally, mbyn.local.postgres) and Airflow's metadata database owned by its own role:
#   mbyn_loader  owns and writes the warehouse tables (workers, Airflow tasks)
#   mbyn_reader  SELECT only, read-only transactions by default (the pipeline view)
#   airflow      owns database airflow (Airflow's metadata)
# Passwords come from the environment (docker-compose.yml requires them); psql reads them with \getenv, never
# from its arguments: a container's processes are in the host's `ps` for every user there.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname mbyn <<'SQL'
\getenv loader_password WAREHOUSE_LOADER_PASSWORD
\getenv reader_password WAREHOUSE_READER_PASSWORD
\getenv airflow_password AIRFLOW_DB_PASSWORD
CREATE ROLE mbyn_loader LOGIN PASSWORD :'loader_password';
CREATE ROLE mbyn_reader LOGIN PASSWORD :'reader_password';
ALTER ROLE mbyn_reader SET default_transaction_read_only = on;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE mbyn FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE mbyn TO mbyn_loader;
GRANT CONNECT ON DATABASE mbyn TO mbyn_reader;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO mbyn_loader;
GRANT USAGE ON SCHEMA public TO mbyn_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE mbyn_loader IN SCHEMA public GRANT SELECT ON TABLES TO mbyn_reader;
SQL
