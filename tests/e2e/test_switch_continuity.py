"""Idle -> talking -> idle on the real stream, read back from the RTMP server: the switch shows
no jump, and the avatar keeps blinking while it speaks (issue 13; docs/idle.md, "Proof on the
real stream").

The default avatar at 1280x720 with life at its defaults (blinks on, motion x1) speaks three
messages with idle stretches between them: six switches. The change between consecutive frames
(mean absolute difference of grey levels) at every switch must be no larger than the 99th
percentile of the change between talking frames.

Why talking frames are the yardstick: with one shared avatar the switch blends the mouth in
(and out) over four frames while the voice starts (or stops), so the largest change at a switch
is the mouth's first (or last) move, which is what talking looks like from frame to frame. Idle
frames change less (breath and blinks), so against them the first syllable itself would count
as a jump; the idle and talking stretches pooled give a yardstick that depends on how much of
the recording is speech. A jump is something on top of the mouth: head, body or background
shifted at the switch (tried: life drawn on idle frames only snaps the head by its breath, 3.9x
the yardstick; a talking picture 1 px off the idle one, 4x).

How the change is measured:
- over head and shoulders (everything life or the mouth can move: life's motion region, 375x416
  px of the default avatar at 1280x720); the rest of the picture is the still photo whether idle
  or talking, and counting it would only dilute a jump;
- averaged over 8x8 blocks first: the encoder's noise is block-sized and would otherwise rule the
  top of the distribution, while a moving head survives (the face is ~130 px wide, 16 blocks);
- leaving out the pair into each keyframe (every RTMP_KEYFRAME_SECONDS, 2 s), on both sides: the
  encoder re-codes the whole picture there, as much change as a fast mouth on a picture that did
  not move.

Where the switches are: a message goes on air at the frame its log line names, and that frame
plays its first sample. Between messages the stream is digital silence and a voice never is, so
the recorded audio gives each message's first and last frame (the log says which sound belongs
to which message). Each window covers the mouth blend (4 frames) with 3 frames either side.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support import amqp
from support.stream import decode_audio, decode_video_gray, ffmpeg, ffprobe, probe, speech_spans, start_recording

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FPS = 30
MOVING = (408, 0, 384, 424)  # x, y, w, h: head and shoulders of the default avatar at 1280x720
EYES = (538, 120, 118, 46)  # both eyes and the lids' travel (as in test_idle_life.py)
BLOCK = 8  # side of the squares the picture is averaged over before frames are compared
BLEND_FRAMES = 4  # the compositor's mouth blend (Compositor.blend_frames)
SPARE = 3  # frames either side of a blend counted as part of the switch
LONGEST_BLINK_GAP = 5.0  # seconds: blinks come 2.5-5 s apart (face/life/blink.py)
MAX_RECORDING = 100  # seconds; the recording is stopped once the last message has played
# about six seconds of speech each: longer than the longest gap between two blinks
TEXTS = [
    "Good evening, and welcome back. The avatar keeps blinking and breathing while it talks, "
    "exactly as it does while it waits for the next message.",
    "Here is the second message of this test. It should start without a jump, and when it ends "
    "the picture should settle back just as smoothly.",
    "And this is the third and last one. Once it is over, the avatar goes back to waiting "
    "quietly, still blinking, still breathing.",
]


def keyframes(path: Path) -> np.ndarray:
    """Whether each video frame, in presentation order, is a keyframe."""
    out = subprocess.run(
        [ffprobe(), "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
         "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    packets = sorted((float(p["pts_time"]), "K" in p["flags"]) for p in json.loads(out)["packets"])
    return np.array([key for _, key in packets])


def block_means(path: Path, box: tuple[int, int, int, int], block: int) -> np.ndarray:
    """Each frame's grey levels in `box`, averaged over `block` x `block` squares (N, h, w)."""
    x, y, w, h = box
    command = [ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
               "-vf", f"crop={w}:{h}:{x}:{y},format=gray,scale={w // block}:{h // block}:flags=area",
               "-f", "rawvideo", "-pix_fmt", "gray", "-"]  # fmt: skip
    raw = subprocess.run(command, check=True, capture_output=True, timeout=120).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, h // block, w // block)


def blink_starts(eyes: np.ndarray) -> np.ndarray:
    """Frames where a blink starts: the dark pixels of irises and pupils drop under 70 % of
    their usual (running median) count, as the lids cover them."""
    dark = (eyes < 70).reshape(len(eyes), -1).sum(axis=1).astype(float)
    usual = np.array([np.median(dark[max(0, i - 45) : i + 45]) for i in range(len(dark))])
    shut = dark < 0.7 * usual
    return np.flatnonzero(shut[1:] & ~shut[:-1]) + 1


def messages_heard(samples: np.ndarray, rate: int, logged: list[float]) -> list[tuple[int, int]]:
    """(first, last) sample of each message, given about when each one went on air (seconds
    into the audio). A message is heard from the sound nearest that time to the last sound
    before the next message, pauses included (speech arriving late on a loaded machine)."""
    heard = np.flatnonzero(samples)
    # sound starting after 50 ms of digital silence (a voice itself has no such gap; exact
    # silence is the stream's idle, or speech that arrived late)
    onsets = heard[np.concatenate([[True], np.diff(heard) > rate // 20])]
    firsts = [int(onsets[np.argmin(np.abs(onsets / rate - t))]) for t in logged]
    lasts = [int(heard[heard < following].max()) for following in firsts[1:]] + [int(heard.max())]
    return list(zip(firsts, lasts))


def metric_values(service, *names: str) -> dict[str, float]:
    _, body = service.get("/metrics")
    text = body.decode()
    return {name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1)) for name in names}


@pytest.fixture
def living_service(start_service, service_env):
    service = start_service(IDLE_SEED="11")  # life at its defaults: blinks on, motion x1
    service.wait_for_log(r"the avatar lives from frame", timeout=90)
    service.wait_for_log(r"connected to RabbitMQ", timeout=30)
    queue = service_env["RABBITMQ_QUEUE"]
    yield service, queue
    service.stop()
    amqp.delete(queue, queue + ".control", queue + ".dlq")


def test_idle_talking_switches_show_no_jump_and_talking_keeps_blinking(living_service, service_env, tmp_path):
    service, queue = living_service
    counted = ("poc_dropped_frames_total", "poc_underrun_frames_total", "poc_audio_underrun_frames_total")
    before = metric_values(service, *counted)
    path = tmp_path / "switch.mkv"
    recording = start_recording(service_env["RTMP_URL"], MAX_RECORDING, path)
    time.sleep(3)  # idle first
    ids = [f"switch-{i}" for i in range(len(TEXTS))]
    for message_id, text in zip(ids, TEXTS):
        amqp.publish(queue, {"type": "text", "data": text, "id": message_id})
        service.wait_for_log(rf"message {message_id}: played", timeout=90)
        time.sleep(2.5)  # idle between messages (and after the last): a switch in, a switch out
    recording.send_signal(signal.SIGINT)  # ffmpeg closes the file properly
    recording.wait(timeout=30)
    # frames the writer dropped (encoder behind) or the face was late for, while recording
    health = {name: value - before[name] for name, value in metric_values(service, *counted).items()}

    facts = probe(path)
    key = keyframes(path)
    moving = block_means(path, MOVING, BLOCK).astype(np.float32)
    eyes = decode_video_gray(path, 1280, 720, box=EYES)
    assert len(moving) == len(key) == len(eyes) > 20 * FPS, (len(moving), len(key), len(eyes))
    assert facts.largest_video_gap() <= 1.5 / FPS, health  # no frame missing from the read-back
    video_pts = np.array(sorted(facts.video_pts))

    # Each message's first and last sample, then frame. Frame k of the stream plays at k / FPS;
    # the first message's first sound gives the recording's clock. (Frames the writer drops on
    # a loaded machine move later messages a little earlier: each is found at its own first
    # sound, which must lie near where its logged frame puts it.)
    audio, rate = decode_audio(path), facts.audio_rate
    on_air = [int(service.wait_for_log(rf"{i}: on air at frame (\d+)", timeout=1).group(1)) for i in ids]
    offset = np.flatnonzero(audio)[0] / rate - on_air[0] / FPS
    logged = [frame / FPS + offset for frame in on_air]
    heard = messages_heard(audio, rate, logged)
    assert all(abs(first / rate - t) < 0.5 for (first, _), t in zip(heard, logged)), (heard, logged, health)
    assert len(audio) - heard[-1][1] > rate, "the recording stopped before the last message had ended"

    def frame_at(sample: int) -> int:
        return int(np.argmin(np.abs(video_pts - (facts.audio_start + sample / rate))))

    starts = [frame_at(first) for first, _ in heard]
    ends = [frame_at(last) for _, last in heard]
    assert starts[0] > FPS, "no idle stretch before the first message"

    # change[i]: from recorded frame i to i + 1
    change = np.abs(np.diff(moving, axis=0)).mean(axis=(1, 2))
    into_key = key[1:]
    switches = {f"{i} {way}": frame for i, start, end in zip(ids, starts, ends)
                for way, frame in (("in", start), ("out", end))}  # fmt: skip
    windows = {name: np.arange(f - SPARE, f + BLEND_FRAMES + SPARE) for name, f in switches.items()}
    at_switch = np.zeros(len(change), bool)
    for window in windows.values():
        at_switch[window] = True
    talking, idle = np.zeros(len(change), bool), np.ones(len(change), bool)
    for first, last in speech_spans(audio, rate):  # the voice heard: the mouth moves
        talking[frame_at(int(first * rate)) : frame_at(int(last * rate))] = True
    for start, end in zip(starts, ends):
        idle[start:end] = False
    talking_change = change[talking & ~at_switch & ~into_key]
    idle_change = change[idle & ~at_switch & ~into_key]
    assert talking_change.size > 10 * FPS, talking_change.size
    limit = np.percentile(talking_change, 99)
    largest = {name: round(float(change[w[~into_key[w]]].max()), 3) for name, w in windows.items()}
    assert max(largest.values()) <= limit, (
        f"a switch jumps: largest change per switch {largest} > {limit:.3f}, the 99th percentile "
        f"while talking (idle: {np.percentile(idle_change, 99):.3f}); while recording {health}"
    )

    # Talking keeps the life: each message is longer than the longest gap between two blinks.
    blinks = blink_starts(eyes)
    for message_id, start, end in zip(ids, starts, ends):
        assert end - start > (LONGEST_BLINK_GAP + 0.2) * FPS, f"{message_id}: only {(end - start) / FPS:.1f} s"
        during = blinks[(blinks >= start) & (blinks < end)]
        assert during.size, f"no blink while {message_id} played (frames {start}-{end}; blinks at {blinks.tolist()})"
