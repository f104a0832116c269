#!/usr/bin/env bash
# Make sure a local RabbitMQ with the plugins the worker needs is running.
# Installs it from Debian when missing; idempotent and quick when all is well.
set -euo pipefail
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo ">> installing rabbitmq-server (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo ">> starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
fi
rabbitmqctl -q await_startup >/dev/null
# consistent-hash: the command exchange; management: the HTTP API tests use to make vhosts.
rabbitmq-plugins -q enable rabbitmq_consistent_hash_exchange rabbitmq_management >/dev/null
for _ in $(seq 1 30); do
  curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "RabbitMQ management API did not come up on :15672" >&2
exit 1
