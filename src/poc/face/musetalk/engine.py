"""MuseTalk v1.5 as a streaming FaceEngine.

Slots arrive with exactly their frame's audio at the stream rate. The utterance resamples the
audio to 16 kHz as it comes and renders a frame once the audio its window reaches (120 ms past
the frame's start) is in, so `feed` may return fewer frames than it was given and `finish`
returns the rest (past the end the window is padded, as upstream pads clip ends). The pipeline
`hear`s each arriving chunk of speech whole before feeding it in batch-size pieces, so every frame
of the chunk is encoded with all of the chunk as look-ahead, in one Whisper pass. Ready frames
go through the model in batches of at most `batch_size`; feed/finish return only once their
frames are done (the UNet and VAE run on the shared batcher's thread meanwhile, the rest on the
caller's worker thread), so dropping an utterance leaves nothing running on its behalf.

Stations share: every engine on the same weights, device and dtype uses one loaded model
(poc.face.musetalk.shared) and one batcher (poc.face.musetalk.batcher), so the UNet and VAE run
on rows of all stations together, earliest deadline first (poc.face.musetalk.deadlines). Each
engine keeps its own prepared avatar, audio features and blend.

Start-up does all the slow and fallible work: weight checks (missing or corrupt files are an
EngineError here, never mid-stream), model loading, and avatar preparation (cached on disk; with
the face-parsing weights present its masks are upstream's parsed jaw).
`warm_up()` then runs each batch shape once (poc.face.musetalk.batcher pads every batch to one
of a few sizes, so none is first tuned mid-speech) and measures the real full-batch latency,
which sets `lead_seconds`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from pathlib import Path
from typing import Sequence

import numpy as np

from poc.face.avatar import Avatar
from poc.face.base import EngineError, FacePatch, RenderedFrame, SpeechSlot
from poc.face.musetalk import _deps
from poc.face.musetalk.batcher import BatchCounters, batch_shapes
from poc.face.musetalk.features import StreamedFeatures
from poc.face.musetalk.parsing import load_parser
from poc.face.musetalk.prepare import prepare_avatar, vae_fingerprint
from poc.face.musetalk.render import FrameRenderer, is_silent
from poc.face.musetalk.resample import StreamResampler
from poc.face.musetalk.shared import SHARED_MODELS, SharedModels
from poc.face.musetalk.timing import ENCODER_RATE, LOOKAHEAD_SECONDS, audio_steps_for_frame, steps_in_samples

log = logging.getLogger(__name__)

_unnamed = itertools.count(1)  # names for engines built without a station name


class MuseTalkEngine:
    """A FaceEngine running MuseTalk v1.5 for one avatar at one frame rate and sample rate.

    station: names this engine in the batch counters (default musetalk-1, -2, ...).
    models: the table of shared models (default: the process's, shared.SHARED_MODELS).
    """

    name = "musetalk"

    def __init__(
        self,
        avatar: Avatar,
        models_dir: Path,
        device: str,
        batch_size: int,
        fps: int,
        sample_rate: int,
        cache_dir: Path | None = None,
        dtype: str = "auto",
        station: str | None = None,
        models: SharedModels | None = None,
    ) -> None:
        if batch_size < 1:
            raise EngineError(f"batch size must be at least 1, got {batch_size}")
        if fps <= 0 or sample_rate <= 0:
            raise EngineError(f"fps and sample rate must be positive, got {fps} fps and {sample_rate} Hz")
        _deps.require("torch")
        self.batch_size = batch_size
        self.fps = fps
        self.sample_rate = sample_rate
        self.station = station if station is not None else f"musetalk-{next(_unnamed)}"
        models_dir = Path(models_dir)
        lease = (models if models is not None else SHARED_MODELS).acquire(models_dir, device, dtype)
        try:
            model = lease.model
            self.device = model.device
            parser = load_parser(models_dir, self.device)  # only preparation uses it; dropped after
            prepared = prepare_avatar(avatar, model.codec.encode_reference, cache_dir, vae_fingerprint(models_dir), parser)
            del parser
            seat = lease.batcher.join(self.station, batch_size)
            try:
                renderer = FrameRenderer(model, prepared, avatar, fps, seat=seat)
            except BaseException:
                seat.leave()
                raise
        except BaseException:
            lease.release()
            raise
        self.prepared = prepared
        self._lease = lease
        self._seat = seat
        self._renderer: FrameRenderer | None = renderer
        self._final_counters: BatchCounters | None = None
        self._resample_lag = StreamResampler(sample_rate, ENCODER_RATE).latency_seconds
        self.measured_fps: float | None = None  # frames/s of one full batch, set by warm_up()
        self._batch_seconds: float | None = None

    @property
    def lead_seconds(self) -> float:
        """Batch latency (measured by warm_up; before that, a batch's worth of real time) plus
        the 120-ms audio look-ahead and the resampler's few-ms lag."""
        batch = self._batch_seconds if self._batch_seconds is not None else self.batch_size / self.fps
        return batch + LOOKAHEAD_SECONDS + self._resample_lag

    @property
    def lookahead_seconds(self) -> float:
        return LOOKAHEAD_SECONDS + self._resample_lag

    @property
    def improves_with_later_audio(self) -> bool:
        return True  # a frame gets upstream's features only once its segment is heard (features.py)

    @property
    def batching(self) -> BatchCounters:
        """The shared batcher's counters (all stations on this model); frozen at close()."""
        if self._final_counters is not None:
            return self._final_counters
        return self._lease.batcher.counters()

    def start_utterance(self) -> "MuseTalkUtterance":
        return MuseTalkUtterance(self._live_renderer(), self.fps, self.sample_rate)

    def warm_up(self) -> float:
        """Render one batch of each shape the batcher runs at this batch size (batch_shapes:
        each new shape's first batch tunes kernels, seconds on a GPU, so that happens here and
        not mid-speech), all on the batcher's thread, then time a second full batch; log the
        result; returns frames/s of a full batch. A batch that cannot run (out of GPU memory) is
        an EngineError here, not mid-stream."""
        renderer = self._live_renderer()
        seconds = self.batch_size / self.fps + 2 * LOOKAHEAD_SECONDS
        audio = voiced_audio(int(seconds * ENCODER_RATE))
        frames = [(n, n) for n in range(self.batch_size)]
        try:
            with self._seat.warming():  # each shape runs as asked, whoever else is talking
                for shape in batch_shapes(self.batch_size):  # the full size last
                    renderer.render(frames[:shape], audio)
                t0 = time.perf_counter()
                renderer.render(frames, audio)
        except Exception as e:  # e.g. out of GPU memory at this batch size: a start-up error
            raise EngineError(
                f"MuseTalk warm-up at batch {self.batch_size} on {self.device} failed: {e}", setting="TALKING_FACE_BATCH_SIZE"
            ) from e
        self._batch_seconds = time.perf_counter() - t0
        self.measured_fps = self.batch_size / self._batch_seconds
        log.info(
            "MuseTalk on %s: %.1f frames/s at batch %d (%.0f ms per batch); the stream needs %d fps",
            self.device, self.measured_fps, self.batch_size, 1000 * self._batch_seconds, self.fps,
        )
        if self.measured_fps < self.fps:
            log.warning(
                "MuseTalk renders %.1f frames/s, slower than the stream's %d fps: talking frames will be late",
                self.measured_fps, self.fps,
            )
        return self.measured_fps

    def close(self) -> None:
        """Release this engine's hold on the shared model (the last engine to close frees it)
        and its avatar's GPU memory; the engine cannot start utterances afterwards."""
        renderer, self._renderer = self._renderer, None
        if renderer is None:
            return
        torch, cuda = renderer.model.torch, renderer.model.device.startswith("cuda")
        del renderer
        self._final_counters = self._lease.batcher.counters()
        self._seat.leave()
        self._lease.release()
        if cuda:
            torch.cuda.empty_cache()

    def _live_renderer(self) -> FrameRenderer:
        if self._renderer is None:
            raise EngineError("the MuseTalk engine is closed")
        return self._renderer


class MuseTalkUtterance:
    """One message: feed slots in any pieces; exactly one RenderedFrame per slot comes back,
    in order, over feed() + finish(). A batch the model fails on (say, out of GPU memory) is
    logged and shown as the idle face rather than raised: frames held back from earlier feeds
    would otherwise be lost or returned twice.

    Silence outside speech skips the model (the frame shows the idle face); a pause inside it
    does not, since switching the lower face between the VAE's rendering and the photo and back
    is visible, and upstream renders every frame. A frame is voiced when its 200-ms window is
    not silent (render.is_silent). Leading frames, before the first voiced one, are skipped as
    they become ready. From the first voiced frame on, every frame goes through the model until
    finish(): a silent frame that is ready before then cannot know whether speech resumes, and
    holding it back until it does would make it late. At finish() the frames still held back
    (those waiting for their look-ahead audio, or all of them if nothing was returned yet) that
    come after the last voiced frame are trailing silence and skipped. So the model renders
    exactly the span from the first to the last voiced frame, plus any trailing silence that
    was returned before finish().
    """

    def __init__(self, renderer: FrameRenderer, fps: int, sample_rate: int) -> None:
        self._renderer = renderer
        self._fps = fps
        self._resampler = StreamResampler(sample_rate, ENCODER_RATE)
        self._features = StreamedFeatures(renderer.model)  # counts this utterance's Whisper passes
        self._heard: deque[int] = deque()  # indices of slots heard ahead but not fed yet
        self._pending: list[SpeechSlot] = []  # fed but not yet rendered
        self._done = 0  # frames of this utterance already returned
        self._spoken = False  # a voiced frame has been seen: later frames are inside speech
        self._finished = False
        self.failures = 0  # batches that raised and were replaced by the idle face

    @property
    def encoder_passes(self) -> int:
        """Whisper encoder passes this utterance has run: at most one per stretch of audio that
        arrives (a hear, or a feed of slots not heard) while frames wait for it, when the
        stretch fits the encoder's window (poc.face.musetalk.features)."""
        return self._features.passes

    def hear(self, slots: Sequence[SpeechSlot]) -> None:
        """Take the audio of slots that will be fed next, now: the frames fed before them are
        then encoded with all of it as look-ahead, in one Whisper pass for the whole stretch
        however many pieces it is fed in. Feed the same slots afterwards, in order."""
        if self._finished:
            raise RuntimeError("hear() after finish()")
        for slot in slots:
            self._resampler.push(_mono(slot))
            self._heard.append(slot.index)

    def feed(self, slots: Sequence[SpeechSlot]) -> list[RenderedFrame]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        for slot in slots:
            if self._heard:  # heard ahead: its audio is in already
                expected = self._heard.popleft()
                if slot.index != expected:
                    raise ValueError(f"slot {slot.index} fed where the heard slot {expected} comes next")
            else:
                self._resampler.push(_mono(slot))
            self._pending.append(slot)
        if slots:
            self._renderer.clock.observe(slots[0].index)  # fed now: anchors the station's deadlines
        return self._render(final=False)

    def finish(self) -> list[RenderedFrame]:
        if self._finished:
            return []
        if self._heard:
            raise RuntimeError(f"finish() before feeding the {len(self._heard)} slots heard ahead")
        self._finished = True
        self._resampler.flush()
        return self._render(final=True)

    def _ready(self, final: bool) -> int:
        """How many pending frames have all the audio their window needs."""
        if final:
            return len(self._pending)
        have = steps_in_samples(self._resampler.output.size)
        n = 0
        while n < len(self._pending) and audio_steps_for_frame(self._done + n, self._fps).stop <= have:
            n += 1
        return n

    def _render(self, final: bool) -> list[RenderedFrame]:
        n = self._ready(final)
        if n == 0:
            return []
        ready = self._pending[:n]
        frames = [(self._done + k, slot.index) for k, slot in enumerate(ready)]
        modelled = self._through_model(frames, final)
        patches: list[FacePatch | None] = [None] * n
        errors: list[Exception] = []
        # All modelled frames go to the batcher at once: it cuts them into batches of at most
        # the batch size, and other stations' rows can fill batches alongside them.
        if modelled:
            try:
                rendered = self._renderer.render_rows(
                    [frames[k] for k in modelled], self._resampler.output, self._features
                )
                for k, patch in zip(modelled, rendered.patches):
                    patches[k] = patch
                errors = rendered.errors
            except Exception as error:  # audio features failed: all these frames show the idle face
                errors = [error]
        for error in errors:  # keep the one-frame-per-slot promise: failed rows show the idle face
            self.failures += 1
            log.error(
                "MuseTalk failed on a batch within frames %d..%d; showing the idle face",
                ready[0].index, ready[-1].index, exc_info=error,
            )  # fmt: skip
        del self._pending[:n]
        self._done += n
        return [RenderedFrame(index=slot.index, patch=patch) for slot, patch in zip(ready, patches)]

    def _through_model(self, frames: list[tuple[int, int]], final: bool) -> list[int]:
        """Positions in `frames` (ready, in order) that go through the model (see the class
        docstring); notes whether speech has begun."""
        audio = self._resampler.output
        voiced = [not is_silent(audio, audio_steps_for_frame(number, self._fps)) for number, _ in frames]
        # at finish() nothing follows these frames: those after the last voiced one are trailing
        end = max((k + 1 for k, v in enumerate(voiced) if v), default=0) if final else len(frames)
        chosen = []
        for k in range(len(frames)):
            self._spoken = self._spoken or voiced[k]
            if self._spoken and k < end:
                chosen.append(k)
        return chosen


def _mono(slot: SpeechSlot) -> np.ndarray:
    audio = np.asarray(slot.audio)
    if audio.ndim != 1:
        raise ValueError(f"slot {slot.index}: audio must be mono 1-D samples, got shape {audio.shape}")
    return audio


def voiced_audio(n: int, rate: int = ENCODER_RATE) -> np.ndarray:
    """n float samples at `rate` of a loud vowel-like buzz (harmonics of 140 Hz, syllable-rate
    tremolo, peaks under 0.4): never 'silent', so every frame goes through the model (warm-up,
    the benches)."""
    t = np.arange(n) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    return (0.2 * buzz * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
