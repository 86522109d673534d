"""Decode an audio message (wav, mp3, ogg, opus, flac, webm, m4a) to mono int16 speech.

Audio messages come from outside, so every failure must become one clear line
(`InvalidAudio`), never a crash or a hang. Two decoders:

- soundfile (libsndfile, in process) for wav/flac: no subprocess, fast.
- ffmpeg (a subprocess with a timeout, bytes through stdin/stdout) for MP3 and Ogg (Vorbis,
  Opus) and for what libsndfile cannot read (webm, m4a, unusual codecs inside the others).
  libsndfile takes an MP3's length from its first frame (a Xing header, else the file size at
  the first frame's bitrate) and an Ogg's from its first chained stream and reads no further, so
  files joined end to end (streamed TTS saved chunk by chunk) or a VBR MP3 without a Xing header
  would silently lose their rest, or be refused as far longer than they are; ffmpeg reads them
  to the end. It is asked for a float32 WAV at the target rate with the source's channels, so
  the mix to mono is the same plain mean on both paths.

A WAV's RIFF header is checked here before any decoder sees it: decoders quietly "repair" a
header that declares more data than the file holds, a data size that is not whole frames, or
zero channels/rate, and a message that lies about its own size is better refused than guessed.
Length is bounded before decoding where the decoder tells it (soundfile) and by asking ffmpeg
for at most a little more than the limit otherwise, so a huge message cannot fill memory.

A few bytes can still claim a lot, so three more things are bounded before any work is done:
the sample rate (a WAV header can claim 2^31 Hz, and the resampler's work grows with the rate),
the decoded samples (frames x channels: a FLAC of silence at a high rate with 8 channels packs
gigabytes of samples into a few hundred KB) and, where the header does not say how long the
audio is (a FLAC written to a pipe), what is read: at most one frame past the limit. Samples
that are not numbers (NaN/inf: float sources only) are refused when they are most of the audio and
replaced by silence when they are a few stray ones. Float samples far beyond full scale (+-1)
are refused the same way when more than a few: they are integer sample values written into a
float file, which clipped would air as a full-scale buzz.
"""

from __future__ import annotations

import io
import math
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
# What libsndfile recognised (SoundFile.format) -> the format ffmpeg decodes it as instead,
# for containers whose length libsndfile takes from the first header (see above). By content,
# not by label: MP3 bytes labelled "ogg" decoded before and still do.
_DECODED_BY_FFMPEG = {"MP3": "mp3", "OGG": "ogg"}
_FFMPEG_DEMUXERS = {
    "wav": "wav", "mp3": "mp3", "ogg": "ogg", "opus": "ogg", "flac": "flac",
    "webm": "matroska,webm", "m4a": "mov,mp4,m4a,3gp,3g2,mj2",
}  # fmt: skip
SUPPORTED_FORMATS = tuple(sorted(set(_ALIASES.values())))

_STREAMING_SIZE = 0xFFFFFFFF  # what a writer that cannot seek back puts in a RIFF size field

# Source rates accepted. Vendors and recorders send 8-48 kHz; studio gear records up to 384 kHz.
# Below 1 kHz or above 384 kHz is a broken or hostile header, not speech.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
# Decoded samples (frames x channels) a message may hold: its allowed length as 96 kHz stereo
# (11.5 M float32 samples, 46 MB, for 60 s). It bounds memory and the resampler's work whatever
# the header claims; a higher rate or more channels only allow a shorter message.
BUDGET_SAMPLES_PER_SECOND = 96_000 * 2
# Refuse audio when more than this fraction of its samples is NaN/inf: that is not speech.
MAX_NOT_FINITE_FRACTION = 0.5
# Refuse float audio when more than this fraction of its samples is beyond +-FAR_OVER_FULL_SCALE:
# not a hot master (a few overs, clipped) but int16 values in a float file, all clipped to a buzz.
# 8 is 18 dB over full scale, and as an int16 value near silence (-72 dBFS).
FAR_OVER_FULL_SCALE = 8.0
MAX_FAR_OVER_FRACTION = 0.01
_SF_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's SF_COUNT_MAX: the header does not give a length
_READ_BLOCK_FRAMES = 65_536  # frames per read when the length is unknown
_TOLERANCE_S = 1e-9  # a length exactly at the limit is allowed despite float rounding
_FFMPEG_HEADER_SLACK = 65_536  # bytes of WAV header ffmpeg may write before the samples


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


def decode_audio(
    data: bytes, fmt: str, sample_rate: int, max_seconds: float, *, one_stream: bool = False
) -> np.ndarray:
    """Decode an audio message to mono int16 at `sample_rate`.

    `one_stream`: the bytes are one constant-bitrate MP3/Ogg stream as a vendor's encoder wrote
    it (edge-tts), never files joined end to end, so libsndfile's length holds and the ~80 ms of
    an ffmpeg start per sentence is saved.

    Raises InvalidAudio for: an unsupported format name, empty data, bytes that do not decode,
    a WAV whose header does not match its bytes, audio with no samples, audio longer than
    `max_seconds`, a sample rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, more decoded samples
    than `max_seconds` allows (see BUDGET_SAMPLES_PER_SECOND), samples mostly NaN/inf, or float
    samples at integer scale (see FAR_OVER_FULL_SCALE).
    """
    canonical = _ALIASES.get(fmt.strip().lower().lstrip(".").removeprefix("audio/"))
    if canonical is None:
        raise InvalidAudio(
            f"unsupported audio format {fmt!r} (supported: {', '.join(SUPPORTED_FORMATS)})"
        )
    if not data:
        raise InvalidAudio("audio message is empty (0 bytes)")
    if data[:4] == b"RIFF" or canonical == "wav":
        _check_rate(parse_wav_header(data, strict=True).sample_rate)  # before any decoder sees it

    decoded: tuple[np.ndarray, int] | None = None
    if canonical in _SOUNDFILE_FORMATS:
        decoded = _decode_with_soundfile(data, sample_rate, max_seconds, one_stream)
    if decoded is None:
        decoded = _decode_with_ffmpeg(data, canonical, sample_rate, max_seconds)
    frames, rate = decoded

    if frames.shape[0] == 0:
        raise InvalidAudio(f"{canonical} audio holds no samples")
    _check_rate(rate)
    _check_duration(frames.shape[0], rate, max_seconds)
    _check_samples(frames.shape[0], frames.shape[1], max_seconds)
    frames = _without_stray_non_finite(frames)
    _check_float_scale(frames)
    return resample_int16(_to_int16_mono(frames), rate, sample_rate)


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


def _decode_with_soundfile(
    data: bytes, sample_rate: int, max_seconds: float, one_stream: bool = False
) -> tuple[np.ndarray, int] | None:
    """(frames x channels float32, rate), or None when libsndfile cannot read these bytes.

    MP3 and Ogg, recognised by their content, are handed to ffmpeg (see _DECODED_BY_FFMPEG)."""
    try:
        source = soundfile.SoundFile(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError):  # LibsndfileError is a RuntimeError
        return None
    with source:
        if source.format in _DECODED_BY_FFMPEG and not one_stream:
            return _decode_with_ffmpeg(
                data, _DECODED_BY_FFMPEG[source.format], sample_rate, max_seconds
            )
        if source.samplerate <= 0 or source.channels <= 0:
            return None
        _check_rate(source.samplerate)
        limit = _max_frames(source.samplerate, max_seconds)
        budget = _sample_budget(max_seconds) // source.channels
        known = source.frames < _SF_UNKNOWN_FRAMES
        if known:
            # soundfile allocates what the header claims before reading: judge the claim first.
            _check_duration(source.frames, source.samplerate, max_seconds)
            _check_samples(source.frames, source.channels, max_seconds)
        try:
            if known:
                frames = source.read(dtype="float32", always_2d=True)
            else:
                # No length in the header (a FLAC written to a pipe): libsndfile says SF_COUNT_MAX
                # frames, which a plain read would try to allocate. One frame over either limit
                # is enough to refuse.
                frames = _read_at_most(source, min(limit, budget) + 1)
        except (RuntimeError, ValueError):
            return None
    if not known and frames.shape[0] > limit:
        raise InvalidAudio(
            f"audio is longer than the {max_seconds:g} s allowed (its header gives no length)"
        )
    return frames, source.samplerate


def _read_at_most(source: soundfile.SoundFile, wanted: int) -> np.ndarray:
    """Up to `wanted` frames, read blockwise so memory follows what the file really holds."""
    blocks: list[np.ndarray] = []
    got = 0
    while got < wanted:
        ask = min(_READ_BLOCK_FRAMES, wanted - got)
        block = source.read(ask, dtype="float32", always_2d=True)
        blocks.append(block)
        got += len(block)
        if len(block) < ask:  # the end of the audio
            break
    return np.concatenate(blocks)


def _decode_with_ffmpeg(
    data: bytes, canonical: str, sample_rate: int, max_seconds: float
) -> tuple[np.ndarray, int]:
    command = [
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", _FFMPEG_DEMUXERS[canonical], "-i", "pipe:0",
        "-vn", "-map", "0:a:0", "-map_metadata", "-1",  # no message-supplied tags in the header
        # A little past the limit, so "too long" is seen without decoding all of it.
        "-t", f"{max_seconds + 0.5:.3f}",
        # And no more bytes than the sample budget (many channels): ffmpeg stops once past it,
        # so output that was cut here always holds more samples than the budget and is refused.
        "-fs", str(4 * _sample_budget(max_seconds) + _FFMPEG_HEADER_SLACK),
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
    if len(frames) >= (max_seconds + 0.5) * layout.sample_rate - 1:
        # Cut at "-t": its true length is unknown, and the cut's would mislead.
        raise InvalidAudio(f"audio is longer than the {max_seconds:g} s allowed")
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


def _to_int16_mono(frames: np.ndarray) -> np.ndarray:
    """The plain mean of the channels as int16; in place after the mean, so a long message
    costs one extra float copy, not five."""
    mono = frames.mean(axis=1)
    # Finite samples can still overflow float32 when summed (inf, or inf - inf = NaN).
    np.nan_to_num(mono, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    # Float sources may exceed full scale; clip before the int16 conversion wraps around.
    np.clip(mono, -1.0, 1.0, out=mono)
    mono *= 32767.0
    return np.rint(mono, out=mono).astype(np.int16)


def _check_rate(rate: int) -> None:
    # The resampler's work and tables grow with the rate; a header can claim any 32-bit rate.
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(
            f"audio sample rate {rate} Hz is outside the {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz "
            "accepted"
        )


def _check_duration(frames: int, rate: int, max_seconds: float) -> None:
    seconds = frames / rate
    if seconds > max_seconds + _TOLERANCE_S:
        raise InvalidAudio(
            f"audio is {seconds:.1f} s long, more than the {max_seconds:g} s allowed"
        )


def _check_samples(frames: int, channels: int, max_seconds: float) -> None:
    samples, budget = frames * channels, _sample_budget(max_seconds)
    if samples > budget:
        raise InvalidAudio(
            f"audio decodes to {samples} samples ({channels} channel(s)), more than the {budget} "
            f"a {max_seconds:g} s message may hold (96 kHz stereo's worth): downmix it to mono "
            "or stereo, or send it shorter"
        )


def _max_frames(rate: int, max_seconds: float) -> int:
    """The most frames `_check_duration` lets through at `rate`."""
    return math.floor((max_seconds + _TOLERANCE_S) * rate)


def _sample_budget(max_seconds: float) -> int:
    return math.floor((max_seconds + _TOLERANCE_S) * BUDGET_SAMPLES_PER_SECOND)


def _check_float_scale(frames: np.ndarray) -> None:
    if max(float(frames.max()), -float(frames.min())) <= FAR_OVER_FULL_SCALE:
        return  # the usual case, without a mask the size of the audio
    far = np.count_nonzero(frames > FAR_OVER_FULL_SCALE)
    far += np.count_nonzero(frames < -FAR_OVER_FULL_SCALE)
    if far > MAX_FAR_OVER_FRACTION * frames.size:
        raise InvalidAudio(
            f"audio is not at float scale: {far / frames.size:.0%} of its samples are beyond "
            f"±{FAR_OVER_FULL_SCALE:g} (full scale is ±1): integer sample values in a float file?"
        )


def _without_stray_non_finite(frames: np.ndarray) -> np.ndarray:
    """`frames` with NaN/inf samples silenced; refused when they are most of the audio."""
    finite = np.isfinite(frames)
    bad = frames.size - int(np.count_nonzero(finite))
    if bad == 0:
        return frames
    if bad > MAX_NOT_FINITE_FRACTION * frames.size:
        raise InvalidAudio(
            f"audio is not sound: {bad / frames.size:.0%} of its samples are NaN or infinite"
        )
    # Silence, not full scale: a stray inf played as a full-scale click is worse than a gap.
    return np.where(finite, frames, np.float32(0.0))
