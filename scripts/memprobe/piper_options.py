"""Piper's memory and speed under each candidate onnxruntime/glibc setting, without the stream.

    .venv/bin/python scripts/memprobe/piper_options.py [--seconds 90] [OPTION ...]

Each option runs in a fresh process: the shipped voice loaded through `poc.speech.piper.load_voice`
with that option's session settings, then sentences drawn like the soak's (2-5 words, and the
urgent "Breaking news, right now.") synthesised one after another in a worker thread (as the
service does), while a second thread allocates and frees a 1280x720 frame 30 times a second and the
heap is trimmed every 10 s (as the service does). After a warm-up of 20 s it samples anonymous RSS
every second and prints one JSON line: RSS after warm-up and at the end, the least-squares slope,
and piper's real-time factor (synthesis seconds / audio seconds). One bench second synthesises
about ten of the soak's seconds of speech, so a 90 s run covers the sentence mix of a 15-minute soak.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

WORDS = ["red", "blue", "green", "today", "offer", "quality", "fresh", "new", "small", "bright"]
# default: piper's own session; arena_off_mmap: what poc.speech.piper.session_options() lands
OPTIONS = ["default", "arena_off", "arena_off_mmap", "arena_same_as_requested", "mem_pattern_off"]


def anon_kib() -> int:
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss_Anon:"):
                return int(line.split()[1])
    return 0


class _ShrinkingSession:
    """A session whose every run ends by shrinking the arena (frees regions no chunk uses)."""

    def __init__(self, session: object, run_options: object) -> None:
        self._session, self._run_options = session, run_options

    def run(self, output_names: object, feed: object) -> object:
        return self._session.run(output_names, feed, self._run_options)

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def load(option: str) -> object:
    import onnxruntime

    from poc.speech import piper
    from poc.speech.piper import load_voice, shipped_voice

    options = onnxruntime.SessionOptions()
    if option in ("arena_off", "arena_off_mmap"):
        options.enable_cpu_mem_arena = False
    if option == "arena_off":  # what load_voice would do with the arena off, less the pin
        piper.pin_mmap_threshold = lambda: False
    if option == "mem_pattern_off":
        options.enable_mem_pattern = False
    if option == "arena_same_as_requested":
        info = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
                                         0, onnxruntime.OrtMemType.DEFAULT)  # fmt: skip
        onnxruntime.create_and_register_allocator(info, onnxruntime.OrtArenaCfg({"arena_extend_strategy": 1}))
        options.add_session_config_entry("session.use_env_allocators", "1")
    voice = load_voice(shipped_voice(), options)
    if option == "arena_same_as_requested":
        run_options = onnxruntime.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        voice.session = _ShrinkingSession(voice.session, run_options)
    return voice


def child(option: str, seconds: float, warm_up: float) -> None:
    voice = load(option)
    rng = random.Random(7)
    stop = threading.Event()
    synth_seconds = [0.0, 0.0]  # synthesis time, audio time (after warm-up)
    start = time.monotonic()

    def speak() -> None:
        while not stop.is_set():
            if rng.random() < 0.18:
                text = "Breaking news, right now."
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))).capitalize() + "."
            began = time.perf_counter()
            samples = sum(len(c.audio_int16_array) for c in voice.synthesize(text, include_alignments=True))
            if time.monotonic() - start > warm_up:
                synth_seconds[0] += time.perf_counter() - began
                synth_seconds[1] += samples / voice.config.sample_rate

    def frames() -> None:
        libc = ctypes.CDLL(None)
        last_trim = time.monotonic()
        while not stop.is_set():
            np.full((720, 1280, 3), 7, np.uint8)  # written, then freed at once: the frame churn
            if time.monotonic() - last_trim >= 10:
                libc.malloc_trim(0)
                last_trim = time.monotonic()
            time.sleep(1 / 30)

    threads = [threading.Thread(target=speak), threading.Thread(target=frames)]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int]] = []
    while (now := time.monotonic() - start) < seconds:
        time.sleep(1)
        if now > warm_up:
            samples.append((now, anon_kib()))
    stop.set()
    for thread in threads:
        thread.join()
    t, kib = np.array(samples, dtype=float).T
    slope = float(np.polyfit(t, kib, 1)[0]) * 60 / 1024
    print(json.dumps({
        "option": option, "anon_after_warm_up_mib": round(kib[0] / 1024, 1),
        "anon_end_mib": round(kib[-1] / 1024, 1), "anon_max_mib": round(kib.max() / 1024, 1),
        "growth_pct": round((kib[-1] - kib[0]) / kib[0] * 100, 2),
        "slope_mib_per_min": round(slope, 2),
        "rtf": round(synth_seconds[0] / max(synth_seconds[1], 1e-9), 4),
        "audio_seconds": round(synth_seconds[1], 1)}))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("options", nargs="*", help=f"any of {', '.join(OPTIONS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--warm-up", type=float, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if unknown := set(args.options) - set(OPTIONS):
        parser.error(f"unknown options {sorted(unknown)}; choose from {', '.join(OPTIONS)}")
    if args.child:
        child(args.options[0], args.seconds, args.warm_up)
        return 0
    for option in args.options or OPTIONS:
        subprocess.run([sys.executable, __file__, "--child", "--seconds", str(args.seconds),
                        "--warm-up", str(args.warm_up), option], check=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
