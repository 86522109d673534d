"""Many stations in one process (issue 12), against the real nginx-rtmp, RabbitMQ and ffmpeg:
each station is its own stream and queue, a message is spoken on its own station only, and a
fault on one station (its RTMP server gone, poisoned messages) leaves the others continuous.
SIGHUP adds and removes stations without touching the ones that stay."""

from __future__ import annotations

import json
import re
import signal
import uuid
from pathlib import Path

import pytest
from support import amqp
from support.polling import wait_until
from support.processes import RtmpServer
from support.stream import decode_audio, probe, record, speech_spans, start_recording

from poc.bench.harness import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FPS = 25
# Small frames: three encoders plus the recorders share this machine's two cores.
COMMON = {"RTMP_RESOLUTION": "480x270", "RTMP_FPS": str(FPS), "RTMP_BITRATE": "400k"}


def stations_toml(stations: dict[str, dict[str, str]]) -> str:
    lines = []
    for name, keys in stations.items():
        lines.append("[[station]]")
        lines.append(f'name = "{name}"')
        lines += [f'{key} = "{value}"' for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def stations(tmp_path, rtmp_server, rabbitmq, service_env):
    """Three stations' keys (a, b on the session's nginx; c on one of its own the test can kill),
    and a way to start the process with them; queues are deleted afterwards."""
    own_server = RtmpServer(tmp_path / "nginx-c")
    own_server.start()
    tag = uuid.uuid4().hex[:8]
    keys = {
        "a": {"queue": f"poc_st_{tag}_a", "rtmp_url": f"{rtmp_server.base_url}/a{tag}"},
        "b": {"queue": f"poc_st_{tag}_b", "rtmp_url": f"{rtmp_server.base_url}/b{tag}", "idle_seed": "7"},
        "c": {"queue": f"poc_st_{tag}_c", "rtmp_url": f"{own_server.base_url}/c{tag}"},
    }
    started: list[ServiceProcess] = []

    def start(names: list[str]) -> ServiceProcess:
        path = tmp_path / "stations.toml"
        path.write_text(stations_toml({name: keys[name] for name in names}))
        env = {**service_env, **COMMON, "STATIONS_FILE": str(path)}
        env.pop("RTMP_URL"), env.pop("RABBITMQ_QUEUE")
        service = ServiceProcess(env, tmp_path / f"stations{len(started)}.log").start()
        started.append(service)
        return service

    yield keys, start, own_server
    for service in started:
        service.kill()
    own_server.stop()
    for station in keys.values():
        queue = station["queue"]
        amqp.delete(queue, queue + ".control", queue + ".dlq")


def health(service, path: str = "/healthz") -> tuple[int, dict]:
    try:
        code, body = service.get(path, timeout=3)
        return code, json.loads(body)
    except (OSError, ValueError):
        return 0, {}


def test_three_stations_each_speak_their_own_messages_and_a_fault_on_one_spares_the_others(stations, tmp_path):
    keys, start, own_server = stations
    service = start(["a", "b", "c"])
    service.wait_for_log(r"3 stations on air", timeout=180)
    for name in "abc":
        service.wait_for_log(rf"\[{name}\] .*connected to RabbitMQ", timeout=60)
    # frames through to every server first, so that c's 503 below is c going down, not c not up yet
    wait_until(lambda: health(service)[1].get("unhealthy") == [], 30)

    # Record a and b over the whole act: c's server dies, c gets poison, a gets a line to say.
    seconds = 24
    recordings = {name: tmp_path / f"{name}.flv" for name in "ab"}
    recorders = {name: start_recording(keys[name]["rtmp_url"], seconds, recordings[name]) for name in "ab"}
    own_server.kill()
    wait_until(lambda: health(service, "/stations/c/healthz")[0] == 503, 15)
    code, overall = health(service)
    assert code == 200 and overall["unhealthy"] == ["c"]  # one station down is not the process down
    amqp.publish(keys["c"]["queue"], b"{not json")
    amqp.publish(keys["c"]["queue"], {"type": "text", "data": ""})
    amqp.publish(keys["a"]["queue"], {"type": "text", "data": "Hello from station a only.", "id": "for-a"})
    service.wait_for_log(r"\[a\] .*for-a: played", timeout=60)
    for recorder in recorders.values():
        recorder.wait(timeout=seconds + 30)

    facts = {name: probe(path) for name, path in recordings.items()}
    for name, fact in facts.items():
        assert fact.video_seconds > seconds - 3, f"{name}: {fact.video_seconds:.1f} s recorded"
        assert len(fact.video_pts) == pytest.approx(fact.video_seconds * FPS, abs=2), name  # every frame
        assert fact.largest_video_gap() < 2.5 / FPS, f"{name}: a {fact.largest_video_gap():.3f} s gap"
        # A/V in step: both tracks end together (a reader joins video at a keyframe, audio at once)
        video_end, audio_end = fact.video_pts[0] + fact.video_seconds, fact.audio_start + fact.audio_seconds
        assert abs(audio_end - video_end) < 1 / FPS, f"{name}: audio ends {audio_end - video_end:+.3f} s off"
    heard = {name: speech_spans(decode_audio(path), facts[name].audio_rate) for name, path in recordings.items()}
    assert heard["a"], "station a's line was not heard on station a's stream"
    assert not heard["b"], f"station b spoke a line that was not its own: {heard['b']}"

    # c's poison went to c's dead-letter queue, with reasons; nothing of it anywhere else.
    wait_until(lambda: amqp.message_count(keys["c"]["queue"] + ".dlq") == 2, 15)
    assert amqp.message_count(keys["a"]["queue"] + ".dlq") == 0
    assert amqp.message_count(keys["b"]["queue"] + ".dlq") == 0

    # The operator's port: one page per station, one /metrics with a station label.
    _, body = service.get("/metrics")
    text = body.decode()
    for name in "abc":
        assert re.search(rf'^poc_frames_total\{{[^}}]*station="{name}"', text, re.MULTILINE), name
    assert re.search(r'^poc_messages_total\{[^}]*outcome="played"[^}]*station="a"[^}]*\} 1\.0', text, re.MULTILINE) or \
        re.search(r'^poc_messages_total\{[^}]*station="a"[^}]*outcome="played"[^}]*\} 1\.0', text, re.MULTILINE)

    # c is back once its server is: the process never restarted it or anything else.
    own_server.start()
    wait_until(lambda: health(service, "/stations/c/healthz")[0] == 200, 40)
    assert service.process.poll() is None
    log = service.log_text()
    assert not re.search(r"\[(a|b)\] .*(lost|failed on air)", log), "a fault on c reached a or b"


def test_sighup_adds_and_removes_stations_without_a_gap_in_the_one_that_stays(stations, tmp_path):
    keys, start, own_server = stations
    service = start(["a", "b"])
    service.wait_for_log(r"2 stations on air", timeout=180)
    seconds = 20
    recording = tmp_path / "b.flv"
    recorder = start_recording(keys["b"]["rtmp_url"], seconds, recording)
    (tmp_path / "stations.toml").write_text(stations_toml({name: keys[name] for name in "bc"}))
    mark = len(service.log_text())
    service.signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: 1 stations added, 1 removed, 0 changed, 1 unchanged", timeout=30, start=mark)
    service.wait_for_log(r"station c: on air", timeout=120, start=mark)
    service.wait_for_log(r"\[a\] .*stopped", timeout=30, start=mark)
    recorder.wait(timeout=seconds + 30)
    facts = probe(recording)
    assert facts.video_seconds > seconds - 3
    assert len(facts.video_pts) == pytest.approx(facts.video_seconds * FPS, abs=2)
    assert facts.largest_video_gap() < 2.5 / FPS, f"b had a {facts.largest_video_gap():.3f} s gap"
    code, overall = health(service)
    assert code == 200 and sorted(overall["stations"]) == ["b", "c"]
    record(keys["c"]["rtmp_url"], 5, tmp_path / "c.flv", timeout=30)  # c streams
    assert probe(tmp_path / "c.flv").video_seconds > 2  # a reader joins at a keyframe (every 2 s)

    # A file that no longer loads changes nothing.
    (tmp_path / "stations.toml").write_text('[[station]]\nname = "b"\ncolour = "red"\n')
    mark = len(service.log_text())
    service.signal(signal.SIGHUP)
    service.wait_for_log(r"SIGHUP: the stations file was not applied: .*colour", timeout=30, start=mark)
    assert sorted(health(service)[1]["stations"]) == ["b", "c"]
    assert service.stop() == 0


def test_a_station_that_cannot_start_stops_start_up_with_one_line_naming_it(stations, tmp_path):
    """Station b's avatar has no face: found only once a is already on air. The process stops
    (exit 2) with one line naming the station and the setting, and a is closed cleanly."""
    import cv2
    import numpy as np

    keys, start, _ = stations
    faceless = tmp_path / "grey.png"
    cv2.imwrite(str(faceless), np.full((270, 480, 3), 128, np.uint8))
    keys["b"]["avatar"] = str(faceless)
    service = start(["a", "b"])
    code = service.wait(timeout=180)
    log = service.log_text()
    lines = [line for line in log.splitlines() if line.startswith("poc: ")]
    assert code == 2, log[-2000:]
    assert len(lines) == 1 and "station 'b'" in lines[0] and "STATIC_VIDEO_PATH" in lines[0], lines
    assert "Traceback" not in log
    assert re.search(r"\[a\] .*stopped", log), "station a was not closed"
