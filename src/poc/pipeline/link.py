"""What the speech stage hands the face stage: one typed item per step of a job's speech.

Each item carries its job, so the face stage never guesses whose speech it holds. In order,
per job: any number of `SpeechPart`s, then exactly one `SpeechEnd` or `SpeechFailed`. A job
whose speech failed before any part is never sent (the speech stage dead-letters it itself).
"""

from __future__ import annotations

from typing import Union

import attrs

from poc.jobs import Job  # noqa: TC001 (attrs needs it at run time)
from poc.speech.base import SpeechChunk  # noqa: TC001


@attrs.frozen(eq=False)
class SpeechPart:
    """The next piece of the job's speech (a sentence, or the whole of an audio message)."""

    job: Job
    chunk: SpeechChunk


@attrs.frozen(eq=False)
class SpeechEnd:
    """The job's speech is complete."""

    job: Job


@attrs.frozen(eq=False)
class SpeechFailed:
    """The job's speech stopped early; what played so far stays, the job is dead-lettered."""

    job: Job
    reason: str


StageLink = Union[SpeechPart, SpeechEnd, SpeechFailed]
