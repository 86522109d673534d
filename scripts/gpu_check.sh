#!/usr/bin/env bash
# The MuseTalk check on a lent GPU machine (one NVIDIA GPU, its own PyTorch, no network there).
#
#   bash scripts/gpu_check.sh prepare   # here: what must travel, into .gpu/ (git-ignored)
#   bash scripts/gpu_check.sh run [STEP...]   # there (device tool, carry [".gpu"]): tests and benches
#
# `prepare` (here, with the project's .venv) downloads, for the GPU image's Python (3.12 unless
# GPU_PYTHON says otherwise), the wheels of every package the MuseTalk tests and benches need that
# the image lacks (the image has torch, transformers, numpy, opencv, pytest, hypothesis, anyio,
# attrs and prometheus-client; not diffusers, pydantic, trio, aio-pika, starlette, hypercorn,
# python-statemachine), at the versions this .venv tests with. It also carries dlib's answers:
# dlib and its 100 MB predictor do not fit the 64 MiB that travels, so it runs the MuseTalk tests
# here once and carries the landmark cache they fill (run/landmarks), which poc reads on a machine
# without dlib (poc.face.landmarks.predictor_bytes), plus the default avatar's landmarks at
# 1280x720 for the benches. About 15 MB in all.
#
# `run` (there) installs the wheels into /tmp/site and runs the steps named (default: all four),
# each under its own timeout:
#   tests     the MuseTalk tests on cuda (POC_TEST_DEVICE=cuda; the broker/RTMP end-to-end test is
#             left out: no RabbitMQ or nginx there), at most 100 s;
#   bench     `bench musetalk` in float16 and bfloat16 at batch 1,4,8,16,32, about a minute each;
#   stations  `bench stations --engine musetalk --face-only` in float16 at batch 32: how many
#             talking stations one card serves with 0 late frames, about 3 minutes;
#   speed     `bench musetalk` with the speed options of MuseTalkModel.tune: channels-last at
#             batch 16 and 32, then channels-last with a compiled VAE decoder at 32, 2-3 minutes.
# It prints everything and writes it under $OUT (the device tool brings that folder back), else
# ./gpu-check/. One device command may run 10 minutes: make it two, `run tests bench` (at most
# 280 s) then `run stations speed` (at most 410 s), about 12 minutes of device time with the start.
set -euo pipefail
cd "$(dirname "$0")/.."

GPU_PYTHON="${GPU_PYTHON:-3.12}"
# Beyond what the GPU image has: poc's own imports and the tests' (pyproject.toml), and theirs.
CARRIED="diffusers importlib_metadata pydantic pydantic_core pydantic-settings python-dotenv annotated-types
typing-inspection typing_extensions trio outcome aio-pika aiormq pamqp python-statemachine starlette
hypercorn h2 hpack hyperframe priority wsproto sniffio"

case "${1:-}" in
prepare)
    mkdir -p .gpu/landmarks .git/info
    grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >>.git/info/exclude
    rm -f .gpu/*.whl
    pins=()
    for name in $CARRIED; do
        pins+=("$name==$(.venv/bin/python -c 'import sys
from importlib.metadata import version
print(version(sys.argv[1]))' "$name")")
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu "${pins[@]}"
    # dlib's answers for every image the MuseTalk tests look at, and for the benches' 1280x720
    # avatar (a test failure here does not matter: only the landmarks they looked up do)
    nice -n 10 .venv/bin/pytest -p no:xdist -q -m "not integration" tests/face/musetalk >/dev/null 2>&1 || true
    .venv/bin/python - <<'EOF'
import numpy as np
from poc.face.avatar import load_avatar
from poc.face.landmarks import detect_landmarks
from poc.paths import DEFAULT_AVATAR

avatar = load_avatar(DEFAULT_AVATAR, 1280, 720)
np.save(".gpu/landmarks-1280x720.npy", detect_landmarks(avatar.frames[0]))
EOF
    cp run/landmarks/*.npy .gpu/landmarks/
    ls .gpu/*.whl | wc -l | xargs echo "wheels:"
    du -sh .gpu
    ;;
run)
    shift
    steps="${*:-tests bench stations speed}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl
    export PYTHONPATH="/tmp/site:src" PYTHONUNBUFFERED=1
    mkdir -p run/landmarks && cp .gpu/landmarks/*.npy run/landmarks/
    out="${OUT:-gpu-check}"
    mkdir -p "$out"
    nvidia-smi -L | tee "$out/gpu.txt"
    # poc's CLI is skipped on purpose so that the benches run even if a carried wheel were
    # missing: they need only torch, diffusers, transformers, numpy and cv2.
    bench() {
        python3 -c 'import argparse, sys
import poc.bench.musetalk as musetalk, poc.bench.musetalk_stations as stations
parser = argparse.ArgumentParser(prog="bench")
subparsers = parser.add_subparsers()
musetalk.add_parser(subparsers)
stations.add_parser(subparsers)
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))' "$@"
    }
    for step in $steps; do
        case "$step" in
        tests)  # the MuseTalk tests on the GPU (tiny random weights in the real layout)
            POC_TEST_DEVICE=cuda timeout 100 python3 -m pytest -p no:cacheprovider -q -n 4 --timeout 120 \
                -m "not integration" tests/face/musetalk 2>&1 | tail -40 | tee "$out/tests-cuda.txt" || true
            ;;
        bench)  # per stage and end to end, full size, random weights
            for dtype in float16 bfloat16; do
                timeout 90 bash -c "$(declare -f bench); bench musetalk --device cuda --dtype $dtype \
                    --batch-sizes 1,4,8,16,32 --landmarks .gpu/landmarks-1280x720.npy" 2>&1 \
                    | tee "$out/bench-$dtype.txt" || true
            done
            ;;
        stations)  # stations per card, all talking, at the batch size that gave the most frames/s
            timeout 190 bash -c "$(declare -f bench); bench stations --engine musetalk --face-only --device cuda \
                --dtype float16 --batch-size 32 --counts 4,6,8,10 --find-max --talking 1.0 --seconds 15 \
                --landmarks .gpu/landmarks-1280x720.npy" 2>&1 | tee "$out/bench-stations.txt" || true
            ;;
        speed)  # what the next speed-ups buy (MuseTalkModel.tune): channels-last, then a compiled decoder
            timeout 70 bash -c "$(declare -f bench); bench musetalk --device cuda --dtype float16 --batch-sizes 16,32 \
                --channels-last --landmarks .gpu/landmarks-1280x720.npy" 2>&1 | tee "$out/bench-channels-last.txt" || true
            timeout 150 bash -c "$(declare -f bench); bench musetalk --device cuda --dtype float16 --batch-sizes 32 \
                --channels-last --compile --landmarks .gpu/landmarks-1280x720.npy" 2>&1 \
                | tee "$out/bench-compiled.txt" || true
            ;;
        *)
            echo "unknown step $step (tests, bench, stations, speed)" >&2
            ;;
        esac
    done
    ;;
*)
    echo "usage: bash scripts/gpu_check.sh prepare | run [tests] [bench] [stations] [speed]" >&2
    exit 2
    ;;
esac
