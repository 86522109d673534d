"""TTS_CHANNELS end to end: the track a viewer pulls from the RTMP server has the configured
layout (mono by default, stereo with TTS_CHANNELS=2)."""

import json
import subprocess

import pytest
from support.stream import ffprobe, record

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("setting", "channels", "layout"), [(None, 1, "mono"), ("2", 2, "stereo")])
def test_stream_audio_has_the_configured_channels(start_service, service_env, tmp_path, setting, channels, layout):
    service = start_service(**({"TTS_CHANNELS": setting} if setting else {}))
    service.wait_for_log(r"on air: streaming", timeout=60)
    path = record(service_env["RTMP_URL"], 4, tmp_path / "read-back.mkv")
    streams = json.loads(subprocess.run(
        [ffprobe(), "-v", "error", "-select_streams", "a:0", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=30,
    ).stdout)["streams"]  # fmt: skip
    assert len(streams) == 1
    assert (streams[0]["channels"], streams[0].get("channel_layout")) == (channels, layout)
    assert streams[0]["sample_rate"] == "44100"
