"""Where the MuseTalk tests run the networks: the CPU here and in CI, `POC_TEST_DEVICE=cuda` on a
GPU machine (scripts/gpu_check.sh run), so the same rules are checked on the card."""

import os

DEVICE = os.environ.get("POC_TEST_DEVICE", "cpu")
