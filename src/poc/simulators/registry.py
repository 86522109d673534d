"""Which simulator stands for which API voice, and the settings that point poc at it.

Used by `python -m poc bench latency --tts NAME` and the end-to-end tests, so both start a
vendor the same way: the simulator on a free local port, and the settings a user would write
for the real vendor with only the endpoint changed (TTS_API_BASE_URL)."""

from __future__ import annotations

import importlib
import socket
from typing import Any

SIMULATOR_KEY = "sim-test-key"

# provider name -> "module:class" of its simulator
VOICE_SIMULATORS = {
    "elevenlabs": "poc.simulators.elevenlabs:ElevenLabsServer",
    "openai": "poc.simulators.openai:OpenAIServer",
    "cartesia": "poc.simulators.cartesia:CartesiaServer",
    "azure": "poc.simulators.azure:AzureSpeechServer",
    "google": "poc.simulators.google:GoogleTtsServer",
}

FACE_SIMULATORS = {
    "d-id": "poc.simulators.did:DIdServer",
    "tavus": "poc.simulators.tavus:TavusServer",
    "hedra": "poc.simulators.hedra:HedraServer",
    "synthesia": "poc.simulators.synthesia:SynthesiaServer",
}


def _load(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def start_voice_simulator(provider: str) -> tuple[Any, dict[str, str]]:
    """The running simulator for `provider` and the settings (env names) that use it."""
    server = _load(VOICE_SIMULATORS[provider])(api_key=SIMULATOR_KEY).start()
    env = {"TTS_PROVIDER": provider, "TTS_API_KEY": SIMULATOR_KEY, "TTS_API_BASE_URL": server.url}
    if provider == "azure":
        env["AZURE_SPEECH_REGION"] = "westeurope"
    return server, env


def start_face_simulator(vendor: str) -> tuple[Any, dict[str, str]]:
    """The running face-API simulator for `vendor` and the settings that use it."""
    server = _load(FACE_SIMULATORS[vendor])(api_key=SIMULATOR_KEY).start()
    env = {
        "TALKING_FACE_PROVIDER": "api",
        "TALKING_FACE_API": vendor,
        "TALKING_FACE_API_URL": server.api_url,
        "TALKING_FACE_API_KEY": SIMULATOR_KEY,
    }
    if vendor == "tavus":  # a replica id, and poc serving the audio Tavus fetches by URL
        port = _free_port()
        env.update({
            "TALKING_FACE_AVATAR_ID": "r79e1c033f",
            "TALKING_FACE_AUDIO_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "TALKING_FACE_AUDIO_HOST": "127.0.0.1",
            "TALKING_FACE_AUDIO_PORT": str(port),
        })  # fmt: skip
    if vendor == "synthesia":  # a stock avatar's id: Synthesia cannot make one from our image
        env["TALKING_FACE_AVATAR_ID"] = "anna_costume1_cameraA"
    return server, env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
