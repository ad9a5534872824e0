#!/usr/bin/env bash
# Makes sure the local servers the tests and `make up` use are up, starting the machine's own
# packages when they are installed but down. Never stops or restarts a running one.
# - Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379): when they are not installed either,
#   nothing to do: the test suite (tests/embedded_servers.py) and `ticker-worker up` then run
#   embedded ones from Python packages.
# - RabbitMQ (127.0.0.1:5672), for the tests that run on both Celery brokers: started when
#   installed. Without it those tests skip (and fail under CI=true).
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
  echo "no Postgres installed: the tests and \`up\` will run an embedded one"
elif ! pg_up; then
  echo "starting Postgres"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "Postgres did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "no Redis installed: the tests and \`up\` will run an embedded one (Valkey)"
elif ! redis_up; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  redis_up || { echo "Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "no RabbitMQ installed: the RabbitMQ runs of the broker tests will skip"
elif ! amqp_up; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do amqp_up && break; sleep 1; done
  amqp_up || { echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi
echo "services checked"
