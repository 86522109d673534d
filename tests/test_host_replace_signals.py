"""A changed station's replacement is built while the old one stays on air (host._replace);
signals arriving during that build must not leave the replacement's Service unreleased (its
face engine holds a model lease and a batcher seat, a hosted face its audio port) nor put it on
air after a stop. Services are the scripted ones of tests/test_host.py."""

from __future__ import annotations

import signal
import threading

import anyio
import pytest

from support.polling import eventually

from test_host import Script, ScriptedService, Station, run_host, send, settings_for

pytestmark = pytest.mark.anyio


class SlowEngineService(ScriptedService):
    """A service whose prepare (engine build, voice load) waits for the test's gate."""

    def __init__(self, settings, script: "GatedScript") -> None:
        super().__init__(settings, script)
        self.gate = script.engine_gates.get(self.name)
        self.preparing = False

    def prepare(self) -> None:
        self.preparing = True
        if self.gate is not None:
            assert self.gate.wait(10), "the test never let the engine build finish"
        super().prepare()


class GatedScript(Script):
    def __init__(self) -> None:
        super().__init__()
        self.engine_gates: dict[str, threading.Event] = {}

    def build(self, settings) -> ScriptedService:
        name = settings.rtmp_url.rsplit("/", 1)[-1]
        self.building.add(name)
        service = SlowEngineService(settings, self)
        self.built.append(service)
        return service


async def test_sigterm_while_a_replacement_engine_builds_lets_the_replacement_go() -> None:
    script = GatedScript()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            host = await run_host(script, tg, ["a"])
            script.engine_gates["a"] = threading.Event()
            script.wanted = [Station("a", settings_for("a").model_copy(update={"fps": 25}))]
            send(signal.SIGHUP)
            await eventually(lambda: len(script.of("a")) == 2 and script.of("a")[1].preparing)
            send(signal.SIGTERM)
            await eventually(lambda: host._finished.is_set())  # every station on air has stopped
            script.engine_gates["a"].set()
    old, replacement = script.of("a")
    assert old.ended == "stopped"
    assert replacement.ended is None, "the replacement went on air after SIGTERM"
    assert replacement.discarded, "the replacement's Service (its engine) was never let go of"
