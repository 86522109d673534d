"""The statechart: the single source of truth for what the stream is doing.

    IDLE --message_accepted--> PROCESSING --frames_ready--> TRANSITIONING --blend_finished--> TALKING
    TALKING --speech_finished | interrupted | failed--> TRANSITIONING --blend_finished--> IDLE
                                                          (or PROCESSING when a message waits)

TRANSITIONING is the mouth blend between the idle face and the talking face; it runs one way
or the other, which the chart records as `blend_direction` when it enters the state. The
compositor fires every media event on the frame clock (so transitions happen at exact frame
boundaries); the pipeline fires `message_accepted` and `failed`. Events that do not apply in
the current state are ignored (a message accepted while talking simply waits its turn).
"""

from __future__ import annotations

from typing import Callable

from statemachine import State, StateChart


class StreamChart(StateChart):
    """Idle / processing / transitioning / talking for one output stream."""

    allow_event_without_transition = True
    catch_errors_as_events = False  # a bug in a callback must surface, not become an event

    idle = State("Idle", initial=True)
    processing = State("Processing")
    transitioning = State("Transitioning")
    talking = State("Talking")

    message_accepted = idle.to(processing)
    frames_ready = processing.to(transitioning, on="_blend_in")
    blend_finished = (
        transitioning.to(talking, cond="blending_in")
        | transitioning.to(processing, cond="has_pending")
        | transitioning.to(idle)
    )
    speech_finished = talking.to(transitioning, on="_blend_out") | transitioning.to.itself(
        cond="blending_in", on="_blend_out"
    )
    interrupted = talking.to(transitioning, on="_blend_out") | transitioning.to.itself(
        cond="blending_in", on="_blend_out"
    )
    failed = (
        processing.to(idle, unless="has_pending")
        | talking.to(transitioning, on="_blend_out")
        | transitioning.to.itself(cond="blending_in", on="_blend_out")
    )
    cleared = processing.to(idle)

    def __init__(self, has_pending: Callable[[], bool] | None = None) -> None:
        self._has_pending = has_pending or (lambda: False)
        # +1 while blending the mouth in, -1 while blending it out; only read in TRANSITIONING.
        self.blend_direction = 0
        super().__init__()

    @property
    def blending_in(self) -> bool:
        return self.blend_direction > 0

    @property
    def has_pending(self) -> bool:
        return self._has_pending()

    @property
    def state_id(self) -> str:
        return next(iter(self.configuration)).id

    def _blend_in(self) -> None:
        self.blend_direction = 1

    def _blend_out(self) -> None:
        self.blend_direction = -1


def mermaid_diagram() -> str:
    """The chart as Mermaid text, generated from the class so the docs cannot drift."""
    from statemachine.contrib.diagram import formatter

    return formatter.render(StreamChart, "mermaid").rstrip() + "\n"


def statechart_markdown() -> str:
    """The full text of docs/statechart.md."""
    return (
        "# The stream statechart\n\n"
        "Generated from `poc.statechart.StreamChart` by `python -m poc statechart`; "
        "a test fails when this file is stale.\n\n"
        "```mermaid\n" + mermaid_diagram() + "```\n\n"
        "- **Idle**: the idle avatar and silence go out on every frame.\n"
        "- **Processing**: a message was accepted; speech and the first talking frames are being "
        "prepared while idle keeps streaming.\n"
        "- **Transitioning**: the mouth blends between the idle face and the talking face over a "
        "few frames, in (towards talking) or out (towards idle); `blend_direction` says which.\n"
        "- **Talking**: lip-synced frames and their audio go out in lockstep.\n\n"
        "Events that do not apply in the current state are ignored: a message accepted while "
        "talking waits its turn, and `blend_finished` leads to Processing instead of Idle when "
        "another message is already waiting.\n"
    )
