#!/usr/bin/env bash
# Find (or start) the services tests and the demo need; one clear line when one is missing.
set -u
PG_URL=${PGKEEPER_TEST_PG:-postgresql://postgres@127.0.0.1:5432/postgres}
REDIS_HOST=127.0.0.1 REDIS_PORT=6379

pg_ok() { pg_isready -q -d "$PG_URL" -t 2 2>/dev/null; }
if ! command -v pg_isready >/dev/null; then
  echo "services: PostgreSQL client tools are missing: apt-get install postgresql postgresql-client" >&2; exit 1
fi
if ! pg_ok && [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
  echo "services: starting the local PostgreSQL cluster" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do pg_ok && break; sleep 0.5; done
fi
if ! pg_ok; then
  echo "services: PostgreSQL is not reachable at $PG_URL; install and start one (apt-get install postgresql), or set PGKEEPER_TEST_PG" >&2
  exit 1
fi

redis_ok() { (exec 3<>/dev/tcp/$REDIS_HOST/$REDIS_PORT && printf 'PING\r\n' >&3 && head -c5 <&3 | grep -q PONG) 2>/dev/null; }
if ! redis_ok && command -v redis-server >/dev/null; then
  echo "services: starting redis-server on $REDIS_HOST:$REDIS_PORT" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do redis_ok && break; sleep 0.25; done
fi
if ! redis_ok; then
  echo "services: Redis is not reachable at $REDIS_HOST:$REDIS_PORT; install it (apt-get install redis-server)" >&2
  exit 1
fi
for bin in pg_dump pg_restore; do
  command -v $bin >/dev/null || { echo "services: $bin is missing: apt-get install postgresql-client" >&2; exit 1; }
done
echo "services: PostgreSQL and Redis are up" >&2
