"""Compressed audio decodes to its end, whatever its first header says about its length.

libsndfile takes an MP3's length from its first frame (a Xing/Info header, or the file size at
the first frame's bitrate) and an Ogg's from its first chained stream, and reads no further.
Files that producers really send break that: MP3s or Ogg files joined end to end (streamed TTS
saved chunk by chunk) and VBR MP3s written without a Xing header. Against that decoder, 3 s + 5 s
of joined audio played 3 s and dropped the rest without a word, and a 40 s VBR MP3 was refused as
99.7 s long (or played as 12.4 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from poc.speech.decode import decode_audio

from .audio_helpers import dominant_frequency, encode_with_ffmpeg

pytestmark = pytest.mark.slow  # each decodes seconds of audio with ffmpeg

RATE = 16000
CODECS = {"mp3": ["-c:a", "libmp3lame"], "ogg": ["-c:a", "libvorbis"], "opus": ["-c:a", "libopus"]}


def _tone(folder: Path, name: str, frequency: int, seconds: float) -> bytes:
    sine = f"sine=frequency={frequency}:sample_rate=48000:duration={seconds}"
    source = ["-f", "lavfi", "-i", sine]
    return encode_with_ffmpeg(folder, name, [*source, *CODECS[name.split(".")[1]]])


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "opus"])
def test_files_joined_end_to_end_play_to_the_end(tmp_path: Path, fmt: str) -> None:
    joined = _tone(tmp_path, f"a.{fmt}", 440, 2) + _tone(tmp_path, f"b.{fmt}", 880, 3)
    audio = decode_audio(joined, fmt, RATE, max_seconds=60)
    assert len(audio) / RATE == pytest.approx(5.0, abs=0.15)
    assert dominant_frequency(audio[-2 * RATE : -RATE // 2], RATE) == pytest.approx(880, abs=2)


@pytest.mark.parametrize("order", ["quiet first", "loud first"])
def test_a_vbr_mp3_without_a_xing_header_is_judged_by_what_it_holds(
    tmp_path: Path, order: str
) -> None:
    # VBR frames of silence are small and frames of noise large, so the file size divided by the
    # first frame's size is far off the real length, one way or the other.
    quiet = ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono:d=10"]
    loud = ["-f", "lavfi", "-i", "anoisesrc=r=44100:d=10:a=0.3"]
    inputs = [*quiet, *loud] if order == "quiet first" else [*loud, *quiet]
    data = encode_with_ffmpeg(
        tmp_path,
        "vbr.mp3",
        [*inputs, "-filter_complex", "[0][1]concat=n=2:v=0:a=1",
         "-c:a", "libmp3lame", "-q:a", "0", "-write_xing", "0"],
    )  # fmt: skip
    audio = decode_audio(data, "mp3", RATE, max_seconds=30)
    assert len(audio) / RATE == pytest.approx(20.0, abs=0.15)


def test_joined_mp3s_longer_than_the_limit_are_refused(tmp_path: Path) -> None:
    joined = _tone(tmp_path, "a.mp3", 440, 2) + _tone(tmp_path, "b.mp3", 880, 3)
    with pytest.raises(ValueError, match="more than the 4 s allowed"):
        decode_audio(joined, "mp3", RATE, max_seconds=4)


def test_joined_mp3s_labelled_ogg_still_decode_by_what_they_are(tmp_path: Path) -> None:
    joined = _tone(tmp_path, "a.mp3", 440, 2) + _tone(tmp_path, "b.mp3", 880, 3)
    audio = decode_audio(joined, "ogg", RATE, max_seconds=60)
    assert len(audio) / RATE == pytest.approx(5.0, abs=0.15)
