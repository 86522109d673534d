#!/usr/bin/env bash
# Install what poc needs on a fresh Debian 12 machine: Debian packages (as root) and .venv.
#   scripts/setup.sh          the service (ffmpeg, espeak-ng, nginx + RTMP module, RabbitMQ)
#   scripts/setup.sh --test   plus what the tests need (Chromium, test and MuseTalk extras)
# Idempotent: it only installs what is missing, and says what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=false
[ "${1:-}" = "--test" ] && with_tests=true

packages=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || packages+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || packages+=(espeak-ng)
# pyttsx3's espeak driver loads the library itself (ctypes: libespeak-ng.so.1), not the binary
[[ "$(/sbin/ldconfig -p 2>/dev/null)" == *"libespeak-ng.so.1 "* ]] || packages+=(libespeak-ng1)
[ -x /usr/sbin/nginx ] || packages+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || packages+=(libnginx-mod-rtmp)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || packages+=(rabbitmq-server)
if $with_tests; then
  [ -x /usr/bin/chromium ] || packages+=(chromium)
fi
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${packages[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${packages[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
extras="."
$with_tests && extras=".[test,musetalk]"
# torch is pinned to 2.13.0 in the musetalk extra: on these machines pip takes the CPU wheel
# from the local disk instead of downloading a multi-GB CUDA build.
echo "setup: installing poc into .venv ($extras)"
.venv/bin/pip install -q --disable-pip-version-check -e "$extras" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import poc, cv2, piper, dlib" || { echo "setup: the venv is incomplete" >&2; exit 1; }
