"""Decode an audio message (wav, mp3, ogg, opus, flac, webm, m4a) to mono int16 speech.

Audio messages come from outside, so every failure must become one clear line
(`InvalidAudio`), never a crash or a hang. Two decoders:

- soundfile (libsndfile, in process) for wav/flac/ogg/opus/mp3: no subprocess, fast.
- ffmpeg (a subprocess with a timeout, bytes through stdin/stdout) for what libsndfile cannot
  read (webm, m4a, unusual codecs inside the others). It is asked for a float32 WAV at the
  target rate with the source's channels, so the mix to mono is the same plain mean on both
  paths.

A WAV's RIFF header is checked here before any decoder sees it: decoders quietly "repair" a
header that declares more data than the file holds, a data size that is not whole frames, or
zero channels/rate, and a message that lies about its own size is better refused than guessed.
Length is bounded before decoding where the decoder tells it (soundfile) and by asking ffmpeg
for at most a little more than the limit otherwise, so a huge message cannot fill memory.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess

import attrs
import numpy as np
import soundfile

from poc.speech.resample import resample_int16

FFMPEG_TIMEOUT_S = 30.0

# Accepted names -> canonical format. The canonical name picks the decoder and ffmpeg demuxer.
_ALIASES = {
    "wav": "wav", "wave": "wav", "x-wav": "wav",
    "mp3": "mp3", "mpeg": "mp3",
    "ogg": "ogg", "oga": "ogg", "vorbis": "ogg",
    "opus": "opus",
    "flac": "flac", "x-flac": "flac",
    "webm": "webm",
    "m4a": "m4a", "mp4": "m4a", "aac": "m4a",
}  # fmt: skip
_SOUNDFILE_FORMATS = frozenset({"wav", "mp3", "ogg", "opus", "flac"})
_FFMPEG_DEMUXERS = {
    "wav": "wav", "mp3": "mp3", "ogg": "ogg", "opus": "ogg", "flac": "flac",
    "webm": "matroska,webm", "m4a": "mov,mp4,m4a,3gp,3g2,mj2",
}  # fmt: skip
SUPPORTED_FORMATS = tuple(sorted(set(_ALIASES.values())))

_STREAMING_SIZE = 0xFFFFFFFF  # what a writer that cannot seek back puts in a RIFF size field


class InvalidAudio(ValueError):
    """The audio message can never be decoded as given (the reason is one line)."""


@attrs.frozen
class WavLayout:
    """What a RIFF/WAVE header declares, after it has been checked against the bytes."""

    format_tag: int
    channels: int
    sample_rate: int
    block_align: int
    bits_per_sample: int
    data_offset: int
    data_size: int


def decode_audio(data: bytes, fmt: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Decode an audio message to mono int16 at `sample_rate`.

    Raises InvalidAudio for: an unsupported format name, empty data, bytes that do not decode,
    a WAV whose header does not match its bytes, audio with no samples, or audio longer than
    `max_seconds`.
    """
    canonical = _ALIASES.get(fmt.strip().lower().lstrip(".").removeprefix("audio/"))
    if canonical is None:
        raise InvalidAudio(
            f"unsupported audio format {fmt!r} (supported: {', '.join(SUPPORTED_FORMATS)})"
        )
    if not data:
        raise InvalidAudio("audio message is empty (0 bytes)")
    if data[:4] == b"RIFF" or canonical == "wav":
        parse_wav_header(data, strict=True)

    decoded: tuple[np.ndarray, int] | None = None
    if canonical in _SOUNDFILE_FORMATS:
        decoded = _decode_with_soundfile(data, max_seconds)
    if decoded is None:
        decoded = _decode_with_ffmpeg(data, canonical, sample_rate, max_seconds)
    frames, rate = decoded

    if frames.shape[0] == 0:
        raise InvalidAudio(f"{canonical} audio holds no samples")
    _check_duration(frames.shape[0], rate, max_seconds)
    mono = np.nan_to_num(frames.mean(axis=1), nan=0.0, posinf=1.0, neginf=-1.0)
    # Float sources may exceed full scale; clip before the int16 conversion wraps around.
    audio = np.rint(np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16)
    return resample_int16(audio, rate, sample_rate)


def parse_wav_header(data: bytes, strict: bool) -> WavLayout:
    """Walk the RIFF chunks up to 'data' and check what they declare.

    strict: the header must tell the truth (a message). Not strict: accept the "size unknown"
    sizes a streaming writer (ffmpeg to a pipe) leaves behind, and use the bytes present.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidAudio("not a WAV file (no RIFF/WAVE header)")
    riff_size = struct.unpack_from("<I", data, 4)[0]
    if strict and riff_size + 8 > len(data):
        raise InvalidAudio(
            f"WAV header declares {riff_size + 8} bytes but the message has {len(data)}"
        )
    fmt: tuple[int, int, int, int, int] | None = None
    position = 12
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        size = struct.unpack_from("<I", data, position + 4)[0]
        body = position + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise InvalidAudio("WAV 'fmt ' chunk is truncated")
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (tag, channels, rate, align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidAudio("WAV 'data' chunk comes before its 'fmt ' chunk")
            return _check_layout(fmt, body, size, len(data), strict)
        position = body + size + (size & 1)  # chunks are word aligned
    raise InvalidAudio("WAV file has no 'data' chunk" if fmt else "WAV file has no 'fmt ' chunk")


def _check_layout(
    fmt: tuple[int, int, int, int, int], body: int, size: int, total: int, strict: bool
) -> WavLayout:
    tag, channels, rate, align, bits = fmt
    if channels == 0:
        raise InvalidAudio("WAV header declares 0 channels")
    if rate == 0:
        raise InvalidAudio("WAV header declares a sample rate of 0 Hz")
    if align == 0:
        raise InvalidAudio("WAV header declares a frame size of 0 bytes")
    if tag in (1, 3) and align != channels * ((bits + 7) // 8):  # plain PCM / float
        raise InvalidAudio(
            f"WAV header is inconsistent: frame size {align} bytes for {channels} channel(s) "
            f"of {bits} bits"
        )
    present = total - body
    if strict:
        if size > present:
            raise InvalidAudio(
                f"WAV header declares {size} bytes of audio but only {present} are present"
            )
        if tag in (1, 3, 0xFFFE) and size % align:
            raise InvalidAudio(f"WAV data size {size} is not a whole number of {align}-byte frames")
    elif size == _STREAMING_SIZE or size > present:
        size = present - present % align
    return WavLayout(tag, channels, rate, align, bits, body, size)


def _decode_with_soundfile(data: bytes, max_seconds: float) -> tuple[np.ndarray, int] | None:
    """(frames x channels float32, rate), or None when libsndfile cannot read these bytes."""
    try:
        source = soundfile.SoundFile(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError):  # LibsndfileError is a RuntimeError
        return None
    with source:
        if source.samplerate <= 0 or source.channels <= 0:
            return None
        _check_duration(source.frames, source.samplerate, max_seconds)
        try:
            frames = source.read(dtype="float32", always_2d=True)
        except (RuntimeError, ValueError):
            return None
        return frames, source.samplerate


def _decode_with_ffmpeg(
    data: bytes, canonical: str, sample_rate: int, max_seconds: float
) -> tuple[np.ndarray, int]:
    command = [
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", _FFMPEG_DEMUXERS[canonical], "-i", "pipe:0",
        "-vn", "-map", "0:a:0",
        # A little past the limit, so "too long" is seen without decoding all of it.
        "-t", f"{max_seconds + 0.5:.3f}",
        "-ar", str(sample_rate), "-c:a", "pcm_f32le", "-f", "wav", "pipe:1",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, input=data, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise InvalidAudio(
            f"decoding {canonical} audio took longer than {FFMPEG_TIMEOUT_S:.0f} s"
        ) from None
    if result.returncode != 0 or not result.stdout:
        raise InvalidAudio(f"cannot decode {canonical} audio: {_ffmpeg_reason(result.stderr)}")
    layout = parse_wav_header(result.stdout, strict=False)
    if layout.format_tag not in (3, 0xFFFE) or layout.bits_per_sample != 32:
        raise InvalidAudio(f"cannot decode {canonical} audio: unexpected ffmpeg output")
    payload = result.stdout[layout.data_offset : layout.data_offset + layout.data_size]
    frames = np.frombuffer(payload, dtype="<f4").reshape(-1, layout.channels)
    return frames, layout.sample_rate


def find_ffmpeg() -> str:
    """The system ffmpeg, else the one bundled with imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise InvalidAudio("no ffmpeg found to decode this audio (install ffmpeg)") from None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _ffmpeg_reason(stderr: bytes) -> str:
    """ffmpeg's error lines as one line, without the '[demuxer @ 0x...]' prefixes."""
    lines: list[str] = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = re.sub(r"\[[^\]]* @ 0x[0-9a-f]+\]\s*|pipe:[01]: ", "", raw).strip()
        if line and line not in lines:
            lines.append(line)
    reason = "; ".join(lines) or "ffmpeg produced no audio"
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _check_duration(frames: int, rate: int, max_seconds: float) -> None:
    seconds = frames / rate
    if seconds > max_seconds + 1e-9:
        raise InvalidAudio(
            f"audio is {seconds:.1f} s long, more than the {max_seconds:g} s allowed"
        )
