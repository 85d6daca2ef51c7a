#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 (installing it when missing) and create the test
# role and database the suite uses: postgresql://refload:refload@127.0.0.1:5432/refload_test
# (each pytest session then creates a database of its own beside it).
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null || ! pg_lsclusters 2>/dev/null | grep -q '^15 '; then
  echo "installing PostgreSQL 15" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi
if ! pg_lsclusters | grep -qE '^15 +main +[0-9]+ +online'; then
  pg_ctlcluster --skip-systemctl-redirect 15 main start
fi
as_postgres() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
for _ in $(seq 30); do as_postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
if [ "$(as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'refload'")" != "1" ]; then
  as_postgres -c "CREATE ROLE refload LOGIN CREATEDB"
fi
# md5, not SCRAM: redshift-connector mis-reads PostgreSQL's SASL mechanism list
# (a trailing empty name), and the Redshift-through-proxy tests use that driver.
as_postgres -c "SET password_encryption = 'md5'" -c "ALTER ROLE refload CREATEDB PASSWORD 'refload'"
# A second role with no privileges of its own: the tests grant it what they need and
# show what a load by a user without privileges on the target reports.
if [ "$(as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'refload_limited'")" != "1" ]; then
  as_postgres -c "CREATE ROLE refload_limited LOGIN PASSWORD 'refload_limited'"
fi
# DROP DATABASE ... WITH (FORCE) at the end of a test session ends every connection to
# it, also those of refload_limited: without this it fails now and then.
as_postgres -c "GRANT pg_signal_backend TO refload"
hba=$(as_postgres -c "SHOW hba_file")
rule="host all refload 127.0.0.1/32 md5"
if ! grep -qF "$rule" "$hba"; then
  { echo "$rule"; cat "$hba"; } > "$hba.new" && mv "$hba.new" "$hba"
  chown postgres: "$hba"
  as_postgres -c "SELECT pg_reload_conf()" >/dev/null
fi
if [ "$(as_postgres -c "SELECT 1 FROM pg_database WHERE datname = 'refload_test'")" != "1" ]; then
  as_postgres -c "CREATE DATABASE refload_test OWNER refload"
fi
