"""From a RabbitMQ message to a talking avatar on air, read back from the real RTMP server."""

import base64
import io
import json
import re
import time
import wave

import numpy as np
import pytest
from support import amqp
from support.polling import wait_until
from support.stream import decode_audio, decode_video_gray, probe, speech_spans, start_recording

pytestmark = pytest.mark.integration

RATE = 44100
# the default avatar's mouth at 1280x720 (landmarks 48-67 lie within x 561-626, y 195-219)
MOUTH_BOX = (540, 180, 110, 80)


@pytest.fixture
def on_air(start_service, service_env):
    # The mouth-motion test compares the mouth box while talking with idle: a breathing head
    # would move it at idle too (blinks stay on; they are above the box).
    service = start_service(IDLE_MOTION="0")
    service.wait_for_log(r"on air: streaming", timeout=60)
    service.wait_for_log(r"connected to RabbitMQ", timeout=30)
    yield service, service_env["RABBITMQ_QUEUE"]
    queue = service_env["RABBITMQ_QUEUE"]
    service.stop()
    amqp.delete(queue, queue + ".control", queue + ".dlq")


def test_text_message_is_spoken_with_a_moving_mouth(on_air, service_env, tmp_path):
    service, queue = on_air
    recording = start_recording(service_env["RTMP_URL"], 16, tmp_path / "talk.mkv")
    time.sleep(4)
    amqp.publish(queue, {"type": "text", "data": "Hello there! This is a test of the talking avatar.",
                         "session_id": "s1", "timestamp": "2026-11-25T00:00:00Z"})  # fmt: skip
    service.wait_for_log(r"message \S+: played", timeout=60)
    recording.wait(timeout=60)
    path = tmp_path / "talk.mkv"
    facts = probe(path)
    audio = decode_audio(path)
    spans = speech_spans(audio, RATE)
    assert spans, "no speech in the pulled stream"
    speech_start = facts.audio_start + spans[0][0]
    speech_end = facts.audio_start + spans[-1][1]
    assert speech_end - speech_start > 1.5

    mouth = decode_video_gray(path, 1280, 720, box=MOUTH_BOX).astype(np.int16)
    pts = np.array(sorted(facts.video_pts))[: len(mouth)]
    motion = np.abs(np.diff(mouth, axis=0)).mean(axis=(1, 2))
    times = pts[1:]
    during = motion[(times > speech_start + 0.2) & (times < speech_end - 0.2)]
    before = motion[(times > pts[0] + 0.5) & (times < speech_start - 0.3)]
    after = motion[times > speech_end + 0.6]
    assert during.size and before.size and after.size
    assert during.mean() > 4 * max(before.mean(), after.mean(), 0.2), (during.mean(), before.mean(), after.mean())
    # continuous throughout the switch in and out
    assert facts.largest_video_gap() <= 1.5 / 30
    assert abs((facts.audio_start + facts.audio_seconds) - (facts.video_pts[0] + facts.video_seconds)) < 0.05
    assert amqp.message_count(queue) == 0


def test_five_messages_play_in_order_exactly_once(on_air):
    service, queue = on_air
    ids = [f"order-{i}" for i in range(5)]
    for i, message_id in enumerate(ids):
        amqp.publish(queue, {"type": "text", "data": f"Message number {i + 1}.", "id": message_id})
    wait_until(lambda: len(re.findall(r"message order-\d: played", service.log_text())) == 5, timeout=90)
    time.sleep(1)
    log = service.log_text()
    played = re.findall(r"message (order-\d): played", log)
    assert played == ids
    on_air_order = re.findall(r"message (order-\d): on air", log)
    assert on_air_order == ids
    assert amqp.message_count(queue) == 0


def test_a_message_past_its_expires_at_is_dead_lettered_not_played(on_air):
    """"The sale ends in a minute" must not air late: behind a long message, one that expires
    meanwhile goes to the DLQ with the reason; the next one, still in time, plays."""
    service, queue = on_air
    busy = " ".join(["This sentence keeps the avatar busy for a little while."] * 3)
    amqp.publish(queue, {"type": "text", "data": busy, "id": "busy"})
    amqp.publish(queue, {"type": "text", "data": "The sale ends now.", "id": "stale", "expires_at": time.time() + 1.0})
    amqp.publish(queue, {"type": "text", "data": "Still worth saying.", "id": "fresh",
                         "expires_at": time.time() + 600})  # fmt: skip
    service.wait_for_log(r"message fresh: played", timeout=90)
    [(body, headers)] = wait_until(lambda: amqp.drain(queue + ".dlq"), timeout=10)
    assert json.loads(body)["id"] == "stale"
    assert str(headers["x-error"]).startswith("expired: not on air by its expires_at ")
    log = service.log_text()
    assert "message stale: on air" not in log
    assert re.findall(r"message (\w+): played", log) == ["busy", "fresh"]
    assert amqp.message_count(queue) == 0


def _wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def test_bad_inputs_are_dead_lettered_and_the_stream_goes_on(on_air, service_env):
    service, queue = on_air
    lying_wav = bytearray(_wav(np.zeros(1600, dtype=np.int16)))
    lying_wav[40:44] = (10**8).to_bytes(4, "little")  # data chunk claims 100 MB
    bad = {
        b"this is not json": "JSON",
        b"\xff\xfe\x00garbage": "UTF-8",
        b"[1, 2, 3]": "object",
        ('{"type": "text", "data": "hi", "x": ' + "[" * 30 + "]" * 30 + "}").encode(): "nested",
        json.dumps({"type": "video", "data": "x"}).encode(): "type",
        json.dumps({"type": "text"}).encode(): "data",
        json.dumps({"type": "text", "data": "   "}).encode(): "data",
        json.dumps({"type": "text", "data": 42}).encode(): "data",
        json.dumps({"type": "text", "data": "x" * 5000}).encode(): "long",
        json.dumps({"type": "audio", "format": "wav", "data": "%%%"}).encode(): "base64",
        json.dumps({"type": "audio", "format": "wav",
                    "data": base64.b64encode(b"RIFF....WAVEjunk").decode()}).encode(): "audio",
        json.dumps({"type": "audio", "format": "wav",
                    "data": base64.b64encode(bytes(lying_wav)).decode()}).encode(): "audio",
        json.dumps({"type": "text", "data": "Hello", "voice": "klingon-warrior"}).encode(): "voice",
    }  # fmt: skip
    for body in bad:
        amqp.publish(queue, body)
    amqp.publish(queue, {"type": "text", "data": "Still here.", "id": "good-after-bad"})
    service.wait_for_log(r"message good-after-bad: played", timeout=90)
    dead = wait_until(lambda: (found := amqp.drain(queue + ".dlq")) and found, timeout=10)
    dead += amqp.drain(queue + ".dlq")
    by_body = {body: headers for body, headers in dead}
    for body, topic in bad.items():
        assert body in by_body, f"not dead-lettered: {body[:60]!r}"
        reason = by_body[body]["x-error"]
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        assert "\n" not in reason and reason.strip()
        assert topic.lower() in reason.lower(), (topic, reason)
    assert amqp.message_count(queue) == 0
    status, _ = service.get("/healthz")
    assert status == 200


def test_interrupt_stops_speech_within_200_ms_and_the_next_message_plays(on_air, service_env, tmp_path):
    service, queue = on_air
    recording = start_recording(service_env["RTMP_URL"], 25, tmp_path / "cut.mkv")
    time.sleep(3)
    long_text = " ".join(["This is a long message that keeps going for quite a while."] * 6)
    amqp.publish(queue, {"type": "text", "data": long_text, "id": "long-one"})
    service.wait_for_log(r"message long-one: on air", timeout=60)
    time.sleep(2.5)
    amqp.publish(queue + ".control", {"type": "control", "action": "interrupt"})
    amqp.publish(queue, {"type": "text", "data": "And now the next one.", "id": "next-one"})
    service.wait_for_log(r"message long-one: interrupted after", timeout=30)
    service.wait_for_log(r"message next-one: played", timeout=60)
    recording.wait(timeout=60)
    cut = service.wait_for_log(r"interrupt at frame (\d+)", timeout=1)
    log = service.log_text()
    assert "next-one: on air" in log

    path = tmp_path / "cut.mkv"
    facts = probe(path)
    spans = speech_spans(decode_audio(path), RATE, window=0.02)
    # Frame k goes on air at k/30 of stream time. The recording's clock starts elsewhere, so map
    # it with the onset of the long message, whose first frame the service logged. (Any leading
    # silence in the voice makes this a little lenient, by tens of ms.)
    interrupt_frame = int(cut.group(1))
    start_frame = int(service.wait_for_log(r"long-one: on air at frame (\d+)", timeout=1).group(1))
    offset = facts.audio_start + spans[0][0] - start_frame / 30  # recording time of frame 0
    cut_at = interrupt_frame / 30 + offset
    ends = [facts.audio_start + end for _, end in spans if facts.audio_start + end > cut_at - 0.5]
    assert ends, spans
    assert ends[0] - cut_at <= 0.2, (ends[0], cut_at)
