"""The statechart allows only the designed transitions, whatever events arrive in any order."""

from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from support.lanes import examples

from poc.statechart import StreamChart, statechart_markdown

EVENTS = [
    "message_accepted",
    "frames_ready",
    "blend_finished",
    "speech_finished",
    "interrupted",
    "failed",
    "cleared",
]

# (source, event) -> target, with the blend direction and "a message waits" as extra inputs
ALLOWED = {
    ("idle", "processing"),
    ("processing", "transitioning"),
    ("processing", "idle"),
    ("transitioning", "talking"),
    ("transitioning", "processing"),
    ("transitioning", "idle"),
    ("transitioning", "transitioning"),
    ("talking", "transitioning"),
}


class ChartMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pending = False
        self.chart = StreamChart(has_pending=lambda: self.pending)
        self.seen: list[tuple[str, str, str]] = []
        self.chart.add_listener(self)
        self.previous_direction = 0

    def after_transition(self, event: str, source, target) -> None:
        self.seen.append((source.id, event, target.id))

    @rule(waiting=st.booleans())
    def set_pending(self, waiting: bool) -> None:
        self.pending = waiting

    @rule(event=st.sampled_from(EVENTS))
    def send(self, event: str) -> None:
        before = self.chart.state_id
        direction = self.chart.blend_direction
        self.seen.clear()
        self.chart.send(event)
        after = self.chart.state_id
        if self.seen:
            source, _, target = self.seen[-1]
            assert (source, target) in ALLOWED
        else:
            assert before == after  # an event that does not apply changes nothing
        # the model: exactly where each event may lead
        if before == "transitioning" and event == "blend_finished":
            if direction > 0:
                assert after == "talking"
            else:
                assert after == ("processing" if self.pending else "idle")
        if before == "talking" and event in {"speech_finished", "interrupted", "failed"}:
            assert after == "transitioning" and self.chart.blend_direction == -1
        if before == "processing" and event == "frames_ready":
            assert after == "transitioning" and self.chart.blend_direction == 1
        if before == "idle":
            assert after in {"idle", "processing"}

    @invariant()
    def talking_is_only_reached_through_transitioning(self) -> None:
        for source, _, target in self.seen:
            if target == "talking":
                assert source == "transitioning"

    @invariant()
    def exactly_one_state_is_active(self) -> None:
        assert len(self.chart.configuration) == 1


ChartMachine.TestCase.settings = settings(max_examples=examples(200), stateful_step_count=40, deadline=None)
TestChart = ChartMachine.TestCase


def test_a_full_message_cycle_visits_every_state_in_order():
    chart = StreamChart()
    visited = [chart.state_id]
    for event in ["message_accepted", "frames_ready", "blend_finished", "speech_finished", "blend_finished"]:
        chart.send(event)
        visited.append(chart.state_id)
    assert visited == ["idle", "processing", "transitioning", "talking", "transitioning", "idle"]


def test_back_to_back_messages_go_through_processing_not_idle():
    pending = [True]
    chart = StreamChart(has_pending=lambda: pending[0])
    for event in ["message_accepted", "frames_ready", "blend_finished", "speech_finished", "blend_finished"]:
        chart.send(event)
    assert chart.state_id == "processing"


def test_docs_statechart_md_is_generated_from_the_class():
    doc = Path(__file__).resolve().parent.parent / "docs" / "statechart.md"
    assert doc.read_text(encoding="utf-8") == statechart_markdown(), (
        "docs/statechart.md is stale: run `python -m poc statechart --write`"
    )


def test_the_readme_shows_the_current_diagram():
    from poc.statechart import mermaid_diagram

    readme = Path(__file__).resolve().parent.parent / "README.md"
    assert "```mermaid\n" + mermaid_diagram() + "```" in readme.read_text(encoding="utf-8")
