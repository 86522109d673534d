"""The speech pipeline: accepted jobs → speech → faces laid onto the frame clock.

    source ─► JobQueue ─► SpeechStage ─(SpeechPart | SpeechEnd | SpeechFailed)─► FaceStage ─► Schedule ─► compositor
                              (TTS thread)                                       (engine thread)
                                                                     or HostedStage (vendor video, local engine if it fails)

- `job_queue`: where each accepted job is (waiting, preparing, on air) until it settles;
- `speech_stage`: jobs in order → their speech, part by part (TTS or decoding in a worker thread);
- `face_stage`: lays each part's audio onto frame numbers at once (audio is never late), then
  renders faces in small batches in a worker thread;
- `hosted_stage`: the same with a hosted face API in front of the local engine;
- `facade`: the `Pipeline` the source submits to; runs the stages and re-plans them.

Both stages work ahead of the clock (the next message is prepared while the current one plays),
up to a budget in media seconds. The compositor and its statechart are built by the caller
(app.py) and handed in.
"""

from poc.pipeline.facade import Pipeline
from poc.pipeline.job_queue import JobQueue
from poc.pipeline.link import SpeechEnd, SpeechFailed, SpeechPart, StageLink
from poc.pipeline.options import AudioDecoder, PipelineOptions

__all__ = [
    "AudioDecoder",
    "JobQueue",
    "Pipeline",
    "PipelineOptions",
    "SpeechEnd",
    "SpeechFailed",
    "SpeechPart",
    "StageLink",
]
