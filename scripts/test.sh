#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, start RabbitMQ, run the tests.
# The tests start their own nginx RTMP server (scripts/rtmp_server.sh) on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/ensure_rabbitmq.sh
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
