#!/usr/bin/env bash
# Make sure a local RabbitMQ answers on 127.0.0.1:5672 (start it if needed, wait until ready).
set -euo pipefail
up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if up; then exit 0; fi
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "rabbitmq: not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
echo "rabbitmq: starting a local broker"
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 120); do
  if up && rabbitmqctl await_startup >/dev/null 2>&1; then echo "rabbitmq: ready"; exit 0; fi
  sleep 0.5
done
echo "rabbitmq: did not start within 60 s" >&2
exit 1
