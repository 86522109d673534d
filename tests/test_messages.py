"""The message contract: what is accepted, and a clear one-line reason for everything else.

What must hold: parse_message raises InvalidMessage and nothing else, whatever the bytes; its
text is one line naming the problem; good messages come back typed with their fields.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.lanes import examples

from poc.messages import (
    AudioMessage,
    ControlMessage,
    InvalidMessage,
    MessageLimits,
    TextMessage,
    message_id,
    parse_message,
)

LIMITS = MessageLimits()


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def rejected(raw: bytes, limits: MessageLimits = LIMITS) -> str:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(raw, limits)
    text = str(caught.value)
    assert text and "\n" not in text
    return text


def test_text_message_with_all_fields() -> None:
    msg = parse_message(
        body(
            type="text",
            data="Hello!",
            session_id="s1",
            timestamp="2026-01-01T00:00:00Z",
            voice="joe",
            language="en",
            id="m1",
            interrupt=True,
        ),
        LIMITS,
    )
    assert isinstance(msg, TextMessage)
    assert (msg.data, msg.session_id, msg.voice, msg.language, msg.id, msg.interrupt) == (
        "Hello!",
        "s1",
        "joe",
        "en",
        "m1",
        True,
    )


def test_minimal_text_defaults_and_unknown_fields_are_ignored() -> None:
    msg = parse_message(body(type="text", data="Hi", colour="blue", meta={"a": [1]}), LIMITS)
    assert isinstance(msg, TextMessage)
    assert msg.interrupt is False and msg.voice is None and msg.id is None
    assert not hasattr(msg, "colour")


def test_blank_voice_means_default_voice() -> None:
    msg = parse_message(body(type="text", data="Hi", voice="  ", language=""), LIMITS)
    assert isinstance(msg, TextMessage)
    assert msg.voice is None and msg.language is None


@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg", "opus", "flac", "WAV"])
def test_audio_message_exposes_decoded_bytes(fmt: str) -> None:
    payload = bytes(range(256)) * 3
    encoded = base64.b64encode(payload).decode()
    msg = parse_message(body(type="audio", data=encoded, format=fmt), LIMITS)
    assert isinstance(msg, AudioMessage)
    assert msg.format == fmt.lower()
    assert msg.audio_bytes() == payload


def test_audio_base64_may_be_line_wrapped() -> None:
    payload = b"RIFF" + bytes(200)
    encoded = base64.encodebytes(payload).decode()  # wraps at 76 columns
    assert "\n" in encoded
    msg = parse_message(body(type="audio", data=encoded, format="wav"), LIMITS)
    assert isinstance(msg, AudioMessage) and msg.audio_bytes() == payload


@pytest.mark.parametrize("action", ["interrupt", "clear", "stop", "start"])
def test_control_messages(action: str) -> None:
    msg = parse_message(body(type="control", action=action), LIMITS)
    assert isinstance(msg, ControlMessage) and msg.action == action


@pytest.mark.parametrize(("raw", "action"), [(" Stop", "stop"), ("START ", "start")])
def test_stream_actions_are_normalised_like_the_others(raw: str, action: str) -> None:
    msg = parse_message(body(type="control", action=raw), LIMITS)
    assert isinstance(msg, ControlMessage) and msg.action == action


def test_body_over_the_limit_is_rejected_before_it_is_read() -> None:
    limits = MessageLimits(max_body_bytes=100)
    # Not even valid UTF-8: the size check must come first.
    assert "101 bytes, over the 100-byte limit" in rejected(b"\xff" * 101, limits)


def test_text_at_the_limit_passes_and_one_more_character_fails() -> None:
    limits = MessageLimits(max_text_chars=10)
    assert isinstance(parse_message(body(type="text", data="é" * 10), limits), TextMessage)
    assert "11 characters, over the 10-character limit" in rejected(
        body(type="text", data="é" * 11), limits
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xc3\x28 not utf-8", "not UTF-8 text (byte 0xc3 at offset 0)"),
        (b"", "body is empty"),
        (b"   \n", "body is empty"),
        (b"{'type': 'text'}", "not JSON"),
        (b'{"type": "text", "data": "hi"', "not JSON"),
        (b"NaN", "not valid JSON"),
        (b"[1, 2]", "JSON array, expected an object"),
        (b'"text"', "JSON string, expected an object"),
        (b"null", "JSON null, expected an object"),
        (b'{"data": "hi"}', "missing 'type' (expected text, audio or control)"),
        (b'{"type": 3}', "'type' must be a string, got number"),
        (b'{"type": "video"}', 'unknown type "video"'),
        (b'{"type": "text"}', "'data' is required"),
        (b'{"type": "text", "data": ""}', "'data' is empty"),
        (b'{"type": "text", "data": " \\t\\n "}', "'data' is empty"),
        (b'{"type": "text", "data": 12}', "'data' must be a string, got number"),
        (b'{"type": "text", "data": ["hi"]}', "'data' must be a string, got array"),
        (b'{"type": "text", "data": "hi", "interrupt": "yes"}', "'interrupt' must be true or false, got string"),
        (b'{"type": "text", "data": "hi", "interrupt": 1}', "'interrupt' must be true or false, got number"),
        (b'{"type": "text", "data": "hi", "voice": 7}', "'voice' must be a string, got number"),
        (b'{"type": "text", "data": "hi", "id": {}}', "'id' must be a string, got object"),
        (b'{"type": "text", "data": "hi", "timestamp": true}', "'timestamp' must be a string or a number"),
        (b'{"type": "audio", "data": "@@@@", "format": "wav"}', "'data' is not valid base64"),
        (b'{"type": "audio", "data": "AAA", "format": "wav"}', "'data' is not valid base64"),
        (b'{"type": "audio", "data": "", "format": "wav"}', "'data' is empty"),
        (b'{"type": "audio", "data": "AAAA"}', "'format' is required"),
        (b'{"type": "audio", "data": "AAAA", "format": "aac"}', 'unsupported audio format "aac" (supported: wav, mp3, ogg, opus, flac)'),
        (b'{"type": "control"}', "'action' is required"),
        (b'{"type": "control", "action": "pause"}', 'unknown control action "pause" (expected interrupt, clear, stop or start)'),
        (b'{"type": "text", "data": 5, "interrupt": "x"}', "'data' must be a string, got number (also wrong: 'interrupt')"),
        (b"1" * 5000, "not usable JSON"),
    ],
)
def test_each_bad_message_gets_its_own_reason(raw: bytes, fragment: str) -> None:
    assert fragment in rejected(raw)


def test_producer_text_in_the_reason_cannot_break_the_line() -> None:
    reason = rejected(body(type="bad\ntype\r\nx"))
    assert "unknown type" in reason


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_nesting_deeper_than_the_limit_is_rejected(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    ok = '{"type": "text", "data": "hi", "x": ' + opener * 7 + "1" + closer * 7 + "}"
    assert isinstance(parse_message(ok.encode(), LIMITS), TextMessage)  # depth 8
    deep = '{"type": "text", "data": "hi", "x": ' + opener * 8 + "1" + closer * 8 + "}"
    assert "nested deeper than 8 levels" in rejected(deep.encode())


def test_a_nesting_bomb_is_rejected_quickly_without_recursion() -> None:
    bomb = b"[" * 1_000_000 + b"]" * 1_000_000
    start = time.perf_counter()
    assert "nested deeper" in rejected(bomb)
    assert time.perf_counter() - start < 1.0


def test_hostile_bodies_cost_linear_time() -> None:
    # An unterminated string of escaped quotes made a string-skipping regex quadratic.
    escaped_quotes = b'"' + b'\\"' * 200_000
    start = time.perf_counter()
    assert "not JSON" in rejected(escaped_quotes)
    assert time.perf_counter() - start < 0.2


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    raw = body(type="text", data="[[[[[[[[[[{{{{{{{{{{ \" [[[[[[[[[[")
    assert isinstance(parse_message(raw, LIMITS), TextMessage)


def test_largest_allowed_audio_body_parses_fast() -> None:
    payload = bytes(1_400_000)
    raw = body(type="audio", data=base64.b64encode(payload).decode(), format="wav")
    assert len(raw) < LIMITS.max_body_bytes
    start = time.perf_counter()
    msg = parse_message(raw, LIMITS)
    assert isinstance(msg, AudioMessage) and len(msg.audio_bytes()) == len(payload)
    assert time.perf_counter() - start < 0.5


def test_message_id_prefers_the_body_id_then_the_amqp_property_then_generates() -> None:
    msg = parse_message(body(type="text", data="hi", id="body-id"), LIMITS)
    assert message_id(msg, "amqp-id") == "body-id"
    anonymous = parse_message(body(type="text", data="hi", id=""), LIMITS)
    assert message_id(anonymous, "amqp-id") == "amqp-id"
    first, second = message_id(anonymous, None), message_id(anonymous, "")
    assert first and second and first != second


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_text_chars"):
        MessageLimits(max_text_chars=0)


@settings(max_examples=examples(400), deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_invalid_message(raw: bytes) -> None:
    try:
        parse_message(raw, MessageLimits(max_body_bytes=200, max_json_depth=3))
    except InvalidMessage as exc:
        assert "\n" not in str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["text", "audio", "control", "other"]) | json_values,
        "data": st.text(max_size=30) | st.sampled_from(["AAAA", "UklGRg==", "  "]) | json_values,
        "format": st.sampled_from(["wav", "mp3", "aac", "OGG"]) | json_values,
        "action": st.sampled_from(["interrupt", "clear", "stop"]) | json_values,
        "interrupt": st.booleans() | json_values,
        "voice": st.text(max_size=5) | json_values,
        "id": st.text(max_size=5) | json_values,
        "timestamp": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=examples(400), deadline=None)
@given(fields)
def test_arbitrary_json_objects_are_accepted_or_rejected_cleanly(raw: dict[str, Any]) -> None:
    try:
        msg = parse_message(json.dumps(raw).encode(), LIMITS)
    except InvalidMessage as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert msg.type == raw["type"]


def test_a_message_cannot_make_the_server_load_a_voice_file():
    body = b'{"type": "text", "data": "hi", "voice": "/srv/voices/evil.onnx"}'
    with pytest.raises(InvalidMessage, match="voice.*not a path"):
        parse_message(body, MessageLimits())


# -- ids and text a voice cannot say --------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "0f8fad5b-d9cb-469f-a165-70867728950e",  # a UUID, what `poc send` and the studio use
        "0f8fad5bd9cb469fa16570867728950e",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # a ULID
        "order-42",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
        "orders/2026-01-01#42 (retry 2)",  # slashes and spaces are fine in an id
        "commande-n°42-émise",
        "注文-42",
        "🎙️-42",
        "x" * 128,
        "語" * 128,
    ],
)
def test_ordinary_ids_and_session_ids_pass(value: str) -> None:
    msg = parse_message(body(type="text", data="hi", id=value, session_id=value), LIMITS)
    assert (msg.id, msg.session_id) == (value, value)
    control = parse_message(body(type="control", action="stop", id=value), LIMITS)
    assert control.id == value


@pytest.mark.parametrize("field", ["id", "session_id"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("x" * 129, "is too long: 129 characters, over the 128-character limit"),
        ("語" * 100_000, "is too long: 100000 characters, over the 128-character limit"),
        ("\ud800", "contains lone surrogate U+D800 at offset 0"),
        ("ab\udfff", "contains lone surrogate U+DFFF at offset 2"),
        ("a\u0000b", "contains control character U+0000 at offset 1"),
        ("line\nbreak", "contains control character U+000A at offset 4"),
        ("tab\there", "contains control character U+0009 at offset 3"),
        ("del\x7f", "contains control character U+007F at offset 3"),
        ("c1\x85", "contains control character U+0085 at offset 2"),
        ("evil\u202eexe.txt", "contains invisible formatting character U+202E at offset 4"),
        ("para\u2029", "contains paragraph separator U+2029 at offset 4"),
    ],
)
def test_an_odd_id_is_refused_naming_the_field(field: str, value: str, fragment: str) -> None:
    reason = rejected(body(type="text", data="hi", **{field: value}))
    assert reason == f"'{field}' {fragment}"
    assert f"'{field}' {fragment}" == rejected(body(type="control", action="stop", **{field: value}))


def test_a_blank_id_means_no_id() -> None:
    msg = parse_message(body(type="text", data="hi", id="  ", session_id=""), LIMITS)
    assert msg.id is None and msg.session_id is None
    assert message_id(msg, "amqp-id") == "amqp-id"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("a\u0000b", "'data' contains control character U+0000 at offset 1"),
        ("\ud800 hello", "'data' contains lone surrogate U+D800 at offset 0"),
        ("hello \udc00", "'data' contains lone surrogate U+DC00 at offset 6"),
        ("bell\u0007", "'data' contains control character U+0007 at offset 4"),
        ("esc \u001b[31m red", "'data' contains control character U+001B at offset 4"),
        ("del\u007f", "'data' contains control character U+007F at offset 3"),
    ],
)
def test_text_a_voice_cannot_say_is_refused_naming_the_character(data: str, fragment: str) -> None:
    assert rejected(body(type="text", data=data)) == fragment


def test_tabs_line_breaks_and_invisible_text_are_left_as_they_were() -> None:
    # Tabs and line breaks are ordinary text; zero-width and other formatting characters pass
    # as before (the speech stage decides what to say); whitespace-only is still "empty".
    # Vertical tab and form feed are line breaks too (Word's soft break, a PDF's page break).
    for data in ["one\ttwo\r\nthree\n", "zero\u200bwidth", "\u200b", "emoji 👩\u200d💻", "x\u0085y",
                 "soft\u000bbreak", "page\u000cbreak"]:
        assert parse_message(body(type="text", data=data), LIMITS).data == data  # type: ignore[union-attr]
    assert rejected(body(type="text", data="\u001c\u001f \t")) == "'data' is empty"


def test_a_nul_in_audio_data_is_named_too() -> None:
    reason = rejected(body(type="audio", data="AAAA\u0000", format="wav"))
    assert reason == "'data' contains control character U+0000 at offset 4"


@pytest.mark.parametrize("field", ["voice", "language"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("jo\u0000e", "contains control character U+0000 at offset 2"),
        ("en\n", "contains control character U+000A at offset 2"),
        ("\ud800", "contains lone surrogate U+D800 at offset 0"),
    ],
)
def test_voice_and_language_names_are_printable(field: str, value: str, fragment: str) -> None:
    assert rejected(body(type="text", data="hi", **{field: value})) == f"'{field}' {fragment}"


def test_blank_control_only_voice_still_means_the_default() -> None:
    # str.strip() counts U+001C..U+001F as whitespace: such a voice was "blank" and still is.
    msg = parse_message(body(type="text", data="hi", voice="\u001f"), LIMITS)
    assert isinstance(msg, TextMessage) and msg.voice is None


def test_an_odd_amqp_message_id_is_escaped_not_replaced() -> None:
    anonymous = parse_message(body(type="text", data="hi"), LIMITS)
    odd = "line\nbreak\u0000\u202e"
    assert message_id(anonymous, odd) == "line\\nbreak\\x00\\u202e"
    assert message_id(anonymous, odd) == message_id(anonymous, odd)  # stable across redeliveries
    assert message_id(anonymous, "注文-42") == "注文-42"


def test_a_long_text_is_scanned_for_odd_characters_quickly() -> None:
    raw = body(type="audio", data="A" * 1_900_000 + "\u0000", format="wav")
    start = time.perf_counter()
    assert "U+0000 at offset 1900000" in rejected(raw)
    assert time.perf_counter() - start < 0.5
