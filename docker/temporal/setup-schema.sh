#!/bin/sh
# Creates (once) and migrates Temporal's two PostgreSQL databases with the admin-tools
# image's temporal-sql-tool; the server image no longer does this itself, as the
# deprecated auto-setup image did. Idempotent: create-database tolerates an existing
# database, setup-schema -v 0.0 an existing schema, update-schema applies what is new.
# Connection: SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD (and SQL_TLS_* for
# a database reached over TLS), read by temporal-sql-tool itself.
set -eu
schema=/etc/temporal/schema/postgresql/v12
for db in temporal temporal_visibility; do
  dir=temporal
  [ "$db" = temporal_visibility ] && dir=visibility
  temporal-sql-tool --db "$db" create-database || true
  temporal-sql-tool --db "$db" setup-schema -v 0.0 || true
  temporal-sql-tool --db "$db" update-schema -d "$schema/$dir/versioned"
done
