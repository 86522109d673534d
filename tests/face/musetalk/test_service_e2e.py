"""MuseTalk plugged into the real service: with tiny random weights in the real layout and a
small output, a message is spoken on a continuous stream read back from the RTMP server."""

import time

import pytest
from support import amqp
from support.stream import decode_audio, probe, speech_spans, start_recording

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_musetalk_engine_streams_a_message_end_to_end(start_service, service_env, tiny_models, tmp_path):
    queue = service_env["RABBITMQ_QUEUE"]
    service = start_service(
        TALKING_FACE_MODEL="musetalk",
        TALKING_FACE_MODEL_PATH=str(tiny_models),
        TALKING_FACE_DEVICE="cpu",
        TALKING_FACE_BATCH_SIZE="4",
        RTMP_RESOLUTION="320x180",
        RTMP_FPS="25",
    )
    try:
        service.wait_for_log(r"connected to RabbitMQ", timeout=180)
        recording = start_recording(service_env["RTMP_URL"], 14, tmp_path / "musetalk.mkv")
        time.sleep(3)
        amqp.publish(queue, {"type": "text", "data": "Testing the MuseTalk engine on air.", "id": "mt-1"})
        service.wait_for_log(r"message mt-1: played", timeout=120)
        recording.wait(timeout=60)
        facts = probe(tmp_path / "musetalk.mkv")
        assert (facts.width, facts.height, facts.fps) == (320, 180, 25)
        assert facts.largest_video_gap() <= 1.5 / 25
        assert len(facts.video_pts) == pytest.approx(facts.video_seconds * 25, rel=0.01)
        assert speech_spans(decode_audio(tmp_path / "musetalk.mkv"), facts.audio_rate)
        assert "Traceback" not in service.log_text()
    finally:
        service.stop()
        amqp.delete(queue, queue + ".control", queue + ".dlq")
