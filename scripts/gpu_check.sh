#!/usr/bin/env bash
# The MuseTalk check on a lent GPU machine (one NVIDIA GPU, its own PyTorch, no network there).
#
#   bash scripts/gpu_check.sh prepare [--tests]   # here: what must travel, into .gpu/ (git-ignored)
#   bash scripts/gpu_check.sh run                 # there (device tool, carry [".gpu"]): the benches
#
# `prepare` downloads the wheels the GPU image lacks (diffusers and its importlib_metadata, for
# Python 3.12 as installed there) and writes the default avatar's landmarks at 1280x720 as a
# .npy, because dlib's 100 MB predictor does not fit the 64 MiB that travels. `--tests` also says
# which packages the test suite would need there (not fetched: the tests have not run on cuda yet).
# `run` installs the wheels into /tmp/site and runs `bench musetalk` in float16 and bfloat16 at
# batch 1,4,8,16,32, printing the tables and writing them under $OUT (the device tool brings
# that folder back), else ./gpu-check/. Both benches take about a minute on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    mkdir -p .gpu .git/info
    grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >>.git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu \
        "diffusers==$(.venv/bin/python -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata
    .venv/bin/python - <<'EOF'
import numpy as np
from poc.face.avatar import load_avatar
from poc.face.landmarks import detect_landmarks
from poc.paths import DEFAULT_AVATAR

avatar = load_avatar(DEFAULT_AVATAR, 1280, 720)
np.save(".gpu/landmarks-1280x720.npy", detect_landmarks(avatar.frames[0]))
EOF
    du -sh .gpu
    if [[ "${2:-}" == "--tests" ]]; then
        echo "for the tests on cuda, also carry wheels of: pydantic pydantic-core pydantic-settings" \
             "python-dotenv annotated-types typing-inspection trio aio-pika aiormq pamqp" \
             "python-statemachine starlette hypercorn (see pyproject.toml's dependencies)"
    fi
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl
    export PYTHONPATH="/tmp/site:src" PYTHONUNBUFFERED=1
    out="${OUT:-gpu-check}"
    mkdir -p "$out"
    nvidia-smi -L | tee "$out/gpu.txt"
    for dtype in float16 bfloat16; do
        # poc's CLI is skipped on purpose: it imports the service's settings (pydantic), which the
        # GPU image lacks; the bench itself needs only torch, diffusers, transformers, numpy, cv2.
        timeout 300 python3 -c 'import argparse, sys
import poc.bench.musetalk as bench
parser = argparse.ArgumentParser(prog="bench")
bench.add_parser(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))' musetalk --device cuda --dtype "$dtype" --batch-sizes 1,4,8,16,32 \
            --landmarks .gpu/landmarks-1280x720.npy 2>&1 | tee "$out/bench-$dtype.txt"
    done
    ;;
*)
    echo "usage: bash scripts/gpu_check.sh prepare [--tests] | run" >&2
    exit 2
    ;;
esac
