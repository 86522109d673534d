#!/usr/bin/env bash
# Stream the demo avatar to a local RTMP server, consuming messages from a local RabbitMQ.
# Installs what is missing, starts nginx (RTMP on 1935, HLS on 8088) and RabbitMQ, then runs
# `python -m poc run` in the foreground (Ctrl-C stops it). Extra arguments go to `poc run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_rabbitmq.sh
RTMP_PORT=${RTMP_PORT:-1935} HLS_PORT=${HLS_PORT:-8088} bash scripts/rtmp_server.sh start
export RTMP_URL=${RTMP_URL:-rtmp://127.0.0.1:${RTMP_PORT:-1935}/live/avatar}
key=${RTMP_URL##*/}
cat <<MSG

Watch it:  ffplay ${RTMP_URL}
           vlc ${RTMP_URL}
           HLS: http://127.0.0.1:${HLS_PORT:-8088}/hls/${key}.m3u8
Studio:    http://127.0.0.1:${HTTP_PORT:-8080}/
Say hello: .venv/bin/python -m poc send "Hello there!"

MSG
exec .venv/bin/python -m poc run "$@"
