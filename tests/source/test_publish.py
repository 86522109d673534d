"""Producing messages: what `poc send` and the web page publish must pass the contract and land
on the right queue, durably."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from poc.messages import AudioMessage, ControlMessage, MessageLimits, TextMessage, parse_message
from poc.source.connection import AmqpSettings, control_queue_name
from poc.source.publish import (
    PublishError,
    build_audio,
    build_control,
    build_text,
    publish,
)

LIMITS = MessageLimits()


def encode(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


def test_built_text_follows_the_contract() -> None:
    body = build_text("Hello!", interrupt=True, voice="joe", language="en", session_id="s")
    msg = parse_message(encode(body), LIMITS)
    assert isinstance(msg, TextMessage)
    assert (msg.data, msg.interrupt, msg.voice, msg.language, msg.session_id) == (
        "Hello!",
        True,
        "joe",
        "en",
        "s",
    )
    assert msg.id and msg.timestamp
    assert build_text("a")["id"] != build_text("a")["id"]


def write_wav(path: Path) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes(3200))
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_built_audio_carries_the_file_and_its_format(tmp_path: Path) -> None:
    content = write_wav(tmp_path / "hello.WAV")
    msg = parse_message(encode(build_audio(tmp_path / "hello.WAV", interrupt=True)), LIMITS)
    assert isinstance(msg, AudioMessage)
    assert msg.format == "wav" and msg.interrupt
    assert msg.audio_bytes() == content


def test_audio_with_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "song.aac").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported audio suffix '\.aac'"):
        build_audio(tmp_path / "song.aac")


def test_built_control_follows_the_contract() -> None:
    for action in ("interrupt", "clear", "stop", "start"):
        msg = parse_message(encode(build_control(action)), LIMITS)
        assert isinstance(msg, ControlMessage) and msg.action == action
    with pytest.raises(ValueError, match="unknown control action 'pause'"):
        build_control("pause")


async def take_one(channel: AbstractChannel, name: str) -> AbstractIncomingMessage:
    queue = await channel.declare_queue(name, passive=True)
    message = await queue.get(no_ack=True)
    assert message is not None
    return message


@pytest.mark.anyio
@pytest.mark.integration
async def test_speech_goes_to_the_queue_and_control_to_its_control_queue(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    text = build_text("Hello!")
    text_id = await publish(settings, text, queue)
    control_id = await publish(settings, build_control("clear"), queue, control=True)

    got = await take_one(channel, queue)
    assert json.loads(got.body) == text
    assert got.message_id == text_id == text["id"]
    assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert got.content_type == "application/json"

    got = await take_one(channel, control_queue_name(queue))
    assert json.loads(got.body)["action"] == "clear"
    assert got.message_id == control_id


@pytest.mark.anyio
@pytest.mark.integration
async def test_raw_bytes_are_sent_unchanged(
    settings: AmqpSettings, queue: str, channel: AbstractChannel
) -> None:
    await publish(settings, b"\xff not json", queue)
    assert (await take_one(channel, queue)).body == b"\xff not json"


@pytest.mark.anyio
@pytest.mark.integration
async def test_wrong_password_is_one_clear_line_without_the_password(
    settings: AmqpSettings, queue: str
) -> None:
    secret = "wrong-9d2e"
    bad = AmqpSettings(host=settings.host, port=settings.port, user="guest", password=secret)
    with pytest.raises(PublishError) as caught:
        await publish(bad, build_text("hi"), queue)
    text = str(caught.value)
    assert "login refused for user 'guest'" in text
    assert secret not in text and "\n" not in text
