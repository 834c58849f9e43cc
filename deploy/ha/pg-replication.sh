#!/bin/sh
# Run once by the postgres image when it initialises the primary (docker-compose.ha.yml): lets the standby
# take its base backup and stream WAL as the database owner, who is a superuser in this image.  The
# image's own pg_hba.conf has no `replication` line.
set -e
echo "host replication ${POSTGRES_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
