"""A value the settings accept must work on air: ffmpeg reads it as the setting meant it, and
nothing the service does with it later can fail. Each case here was once accepted at start-up
and then broke the stream (or start-up ended in a traceback instead of one line)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from poc.config import ConfigError, Settings, find_ffmpeg, load_settings
from poc.stations import load_stations

NO_ENV_FILE = Path("/nonexistent/.env")
ROOT = Path(__file__).resolve().parents[1]


def settings_with(**env: str):
    return load_settings(environ=env, env_file=NO_ENV_FILE, check_files=False)


def refusal(**env: str) -> str:
    with pytest.raises(ConfigError) as error:
        settings_with(**env)
    message = str(error.value)
    assert "\n" not in message
    return message


# --- RTMP_URL: a port urlsplit cannot read -------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_an_rtmp_url_with_an_unusable_port_is_refused(port):
    message = refusal(RTMP_URL=f"rtmp://127.0.0.1:{port}/live/s3cretkey")
    assert message.startswith("RTMP_URL: ")
    assert "port" in message and "s3cretkey" not in message


def test_run_with_an_unusable_rtmp_port_says_one_line(tmp_path):
    # the service redacts the URL for its logs while it is built: an unreadable port raised
    # a bare ValueError there, and `run` ended in a traceback
    env = {
        **os.environ,
        "POC_ENV_FILE": str(NO_ENV_FILE),
        "RTMP_URL": "rtmp://127.0.0.1:99999/live/s3cretkey",
        "HTTP_PORT": "0",
        "TTS_PROVIDER": "espeak",
        "RABBITMQ_PORT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "poc", "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poc: cannot start: RTMP_URL: "), result.stderr[-2000:]
    assert "s3cretkey" not in result.stderr


def test_a_stations_file_with_an_unusable_rtmp_port_is_one_line(tmp_path):
    path = tmp_path / "stations.toml"
    path.write_text('[[station]]\nname = "a"\nrtmp_url = "rtmp://127.0.0.1:70000/live/k1"\n', encoding="utf-8")
    base = load_settings({}, NO_ENV_FILE)
    with pytest.raises(ConfigError) as error:
        load_stations(path, base, {}, NO_ENV_FILE)
    assert "station 'a': rtmp_url: " in str(error.value)


# --- bitrates: ffmpeg must read the number the setting says --------------------------------


def bits_per_second_ffmpeg_reads(bitrate: str) -> int:
    """The video bitrate libx264 gets from `-b:v bitrate -maxrate bitrate` (as the writer passes it)."""
    command = [
        find_ffmpeg(None), "-hide_banner", "-nostdin", "-loglevel", "verbose",
        "-f", "lavfi", "-i", "testsrc=s=64x64:r=10", "-frames:v", "1",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
        "-f", "null", "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-1000:]
    found = re.search(r"bitrate max/min/avg: (\d+)/\d+/(\d+)", result.stderr)
    assert found, result.stderr[-1000:]
    return int(found[2])


@pytest.mark.parametrize(
    ("written", "bits"),
    [
        ("2.5M", 2_500_000),  # the README's own example; ffmpeg reads a lower-case m as milli
        ("2000k", 2_000_000),
        ("2_000k", 2_000_000),  # Python's float() reads the underscore, ffmpeg refuses it
        ("1500000", 1_500_000),
        ("0.5m", 500_000),
    ],
)
def test_ffmpeg_reads_the_bitrate_the_setting_says(written, bits):
    settings = settings_with(RTMP_BITRATE=written, RTMP_AUDIO_BITRATE=written)
    assert bits_per_second_ffmpeg_reads(settings.bitrate) == bits
    assert settings.audio_bitrate == settings.bitrate


def test_bitrates_keep_their_usual_spelling():
    settings = settings_with(RTMP_BITRATE="3000k", RTMP_AUDIO_BITRATE="160K")
    assert (settings.bitrate, settings.audio_bitrate) == ("3000k", "160k")


# --- TTS_SAMPLE_RATE: the stream's AAC encoder takes only some rates ------------------------


@pytest.mark.parametrize("rate", ["44000", "9000", "50000", "44101"])
def test_a_sample_rate_aac_cannot_carry_is_refused(rate):
    message = refusal(TTS_SAMPLE_RATE=rate)
    assert message.startswith("TTS_SAMPLE_RATE: ") and "44100" in message


def accepted_rates() -> list[int]:
    """Every rate from 8 to 96 kHz that TTS_SAMPLE_RATE's own parser takes (the parser, not
    load_settings: 88001 whole settings loads would take minutes)."""
    (parser,) = Settings.model_fields["sample_rate"].metadata
    rates = []
    for rate in range(8000, 96001):
        try:
            rates.append(parser.func(str(rate)))
        except ValueError:
            pass
    return rates


@pytest.mark.slow  # 12 ffmpeg runs: seconds of CPU
def test_every_accepted_sample_rate_opens_the_aac_encoder():
    rates = accepted_rates()
    assert 44100 in rates and 48000 in rates and 8000 in rates and 96000 in rates
    assert len(rates) < 20, "odd rates are accepted"  # before running ffmpeg for each of them
    for rate in rates:
        command = [
            find_ffmpeg(None), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", f"sine=r={rate}", "-t", "0.1",
            "-c:a", "aac", "-b:a", "128k", "-ar", str(rate), "-ac", "1", "-f", "null", "-",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{rate}: {result.stderr[-500:]}"
