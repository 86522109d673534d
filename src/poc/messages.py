"""The message contract: what a producer may put on the RabbitMQ queue, and its validation.

Bodies are JSON objects with a ``type`` of ``text``, ``audio`` or ``control``. Everything a
producer can get wrong is reported by :func:`parse_message` as one :class:`InvalidMessage`
whose text is a single line, because that line travels as the ``x-error`` header of the
dead-lettered copy and is the only thing the producer will see.

The checks run cheapest-first and each one protects the next: the size limit before anything
reads the body, UTF-8 before JSON, and the nesting depth before pydantic sees the data. Every
step is linear in the body size (a regex that skips JSON strings was tried for the depth check
and is quadratic on ``"\\"\\"\\"...``), so a hostile body costs at most a few milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
import uuid
from typing import Annotated, Any, Literal, Union

import attrs
import pydantic
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from poc.expiry import epoch_seconds

AUDIO_FORMATS = ("wav", "mp3", "ogg", "opus", "flac")
CONTROL_ACTIONS = ("interrupt", "clear", "stop", "start")
MESSAGE_TYPES = ("text", "audio", "control")
# Ids go into every log line about their message, into the dedupe of redeliveries and into the
# DLQ copy's AMQP message_id: 128 characters is far more than a UUID (36), a ULID (26) or an
# "order-42"-style key needs, and short enough to read in a log.
MAX_ID_CHARS = 128

# Not text in speech: C0 controls other than tab and line breaks (vertical tab and form feed
# are line breaks too: Word's soft break, a PDF's page break), DEL, and lone surrogates.
# A NUL makes piper fail as if the engine were down (retried, then a fallback voice for 30 s),
# and a surrogate cannot even be encoded to UTF-8. A regex scans a 2 MB body in milliseconds.
_NOT_SPEECH = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ud800-\udfff]")
# Not in a name (id, session_id, voice, language): every control character (tab and line breaks
# too), invisible formatting characters (e.g. right-to-left override), lone surrogates and
# line/paragraph separators: each can break or disguise the log line the name is written into.
_NOT_IN_NAME = {
    "Cc": "control character",
    "Cf": "invisible formatting character",
    "Cs": "lone surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}


class InvalidMessage(ValueError):
    """A body that can never be processed; str() is one line saying what was wrong."""


def _positive(_instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class MessageLimits:
    """Bounds on what one message may cost us (memory, parse time, air time)."""

    max_body_bytes: int = attrs.field(default=2_000_000, validator=_positive)
    max_text_chars: int = attrs.field(default=2000, validator=_positive)
    # Enforced by the speech stage once the audio is decoded (the body only bounds bytes).
    max_audio_seconds: float = attrs.field(default=60.0, validator=_positive)
    max_json_depth: int = attrs.field(default=8, validator=_positive)

    @classmethod
    def from_settings(cls, settings: Any) -> "MessageLimits":
        """The limits a service's settings set (MAX_BODY_BYTES, MAX_TEXT_CHARS, MAX_AUDIO_SECONDS)."""
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_text_chars=settings.max_text_chars,
            max_audio_seconds=settings.max_audio_seconds,
        )


def _none_if_blank(value: Any) -> Any:
    # An empty voice/language means "use the default", the same as leaving it out.
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _bad_char(value: str, offset: int) -> str:
    """'contains <what> U+XXXX at offset N', the fragment naming a refused character."""
    char = value[offset]
    kind = _NOT_IN_NAME.get(unicodedata.category(char), "character")
    return f"contains {kind} U+{ord(char):04X} at offset {offset}"


def _check_name_chars(value: str) -> str:
    for offset, char in enumerate(value):
        if unicodedata.category(char) in _NOT_IN_NAME:
            raise ValueError(_bad_char(value, offset))
    return value


def _check_id(value: str | None) -> str | None:
    if value is None:
        return None
    # The length first: it bounds the character scan (a body may hold a 2 MB id).
    if len(value) > MAX_ID_CHARS:
        raise ValueError(
            f"is too long: {len(value)} characters, over the {MAX_ID_CHARS}-character limit"
        )
    return _check_name_chars(value)


OptionalName = Annotated[StrictStr | None, pydantic.BeforeValidator(_none_if_blank)]
# A blank id means "no id", like a blank voice: the AMQP message_id or a new uuid is used.
OptionalId = Annotated[
    StrictStr | None,
    pydantic.BeforeValidator(_none_if_blank),
    pydantic.AfterValidator(_check_id),
]


class _Base(BaseModel):
    # strict: "yes" is not a bool and 5 is not a string; extra fields are ignored so producers
    # can add their own bookkeeping without breaking us.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: OptionalId = None
    session_id: OptionalId = None
    # Informational only; producers send ISO strings or epoch seconds.
    timestamp: StrictStr | float | None = None


class _Speech(_Base):
    data: StrictStr
    voice: OptionalName = None
    language: OptionalName = None
    interrupt: StrictBool = False
    # Not played once this time has passed (seconds since 1970; poc/expiry.py says why).
    expires_at: Annotated[float | None, pydantic.BeforeValidator(epoch_seconds)] = None

    @pydantic.field_validator("voice", "language")
    @classmethod
    def _a_name_not_a_path(cls, value: str | None) -> str | None:
        # A producer picks among the server's voices; loading a model file from a path it
        # names is the operator's choice (TTS_VOICE), never a message's.
        if value is not None and ("/" in value or "\\" in value or len(value) > 100):
            raise ValueError("must be a voice or language name, not a path")
        return None if value is None else _check_name_chars(value)

    @pydantic.field_validator("data")
    @classmethod
    def _data_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        # After the blank check, so whitespace-only text (\x1c-\x1f included) stays "empty".
        bad = _NOT_SPEECH.search(value)
        if bad is not None:
            raise ValueError(_bad_char(value, bad.start()))
        return value


class TextMessage(_Speech):
    type: Literal["text"]


class AudioMessage(_Speech):
    type: Literal["audio"]
    format: Literal["wav", "mp3", "ogg", "opus", "flac"]
    _audio: bytes = pydantic.PrivateAttr(default=b"")

    @pydantic.field_validator("format", mode="before")
    @classmethod
    def _format_lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @pydantic.model_validator(mode="after")
    def _decode(self) -> AudioMessage:
        # Decode once here: it both validates the base64 and saves the speech stage a second pass.
        # Line breaks are tolerated because common encoders wrap base64 at 76 columns.
        try:
            try:
                self._audio = base64.b64decode(self.data, validate=True)
            except binascii.Error:
                self._audio = base64.b64decode("".join(self.data.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"'data' is not valid base64 ({exc})") from None
        if not self._audio:
            raise ValueError("'data' decodes to no bytes")
        return self

    def audio_bytes(self) -> bytes:
        """The encoded audio file (still wav/mp3/...; decoding happens in the speech stage)."""
        return self._audio


class ControlMessage(_Base):
    type: Literal["control"]
    # interrupt/clear act on speech; stop/start take the whole stream off air and back.
    action: Literal["interrupt", "clear", "stop", "start"]

    @pydantic.field_validator("action", mode="before")
    @classmethod
    def _action_lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


Message = Union[TextMessage, AudioMessage, ControlMessage]

_MODELS: dict[str, type[BaseModel]] = {
    "text": TextMessage,
    "audio": AudioMessage,
    "control": ControlMessage,
}


def parse_message(body: bytes, limits: MessageLimits) -> Message:
    """Validate one delivery body against the contract.

    Raises InvalidMessage (and nothing else) for any body that does not follow it.
    """
    if len(body) > limits.max_body_bytes:
        raise InvalidMessage(
            f"body is too large: {len(body)} bytes, over the {limits.max_body_bytes}-byte limit"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            f"body is not UTF-8 text (byte 0x{body[exc.start]:02x} at offset {exc.start})"
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InvalidMessage("body is empty (expected a JSON object)")
    try:
        # The C parser is linear-time and stops at the interpreter's recursion limit with a
        # RecursionError, so a nesting bomb costs nothing; the real limit is checked below.
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidMessage(_too_deep(limits)) from None
    except ValueError as exc:  # e.g. a 5000-digit integer
        raise InvalidMessage(f"body is not usable JSON: {_one_line(str(exc))}") from None
    # Counting brackets (strings included) is a cheap upper bound on the depth: almost every
    # message has one or two, so the walk over the parsed containers is rarely needed.
    brackets = text.count("[") + text.count("{")
    if brackets > limits.max_json_depth and _deeper_than(raw, limits.max_json_depth):
        raise InvalidMessage(_too_deep(limits))
    if not isinstance(raw, dict):
        raise InvalidMessage(f"body is a JSON {_json_kind(raw)}, expected an object")

    kind = raw.get("type")
    if kind is None:
        raise InvalidMessage(f"missing 'type' (expected {_choices(MESSAGE_TYPES)})")
    if not isinstance(kind, str):
        raise InvalidMessage(f"'type' must be a string, got {_json_kind(kind)}")
    model = _MODELS.get(kind)
    if model is None:
        raise InvalidMessage(f"unknown type {_show(kind)} (expected {_choices(MESSAGE_TYPES)})")
    try:
        message = model.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise InvalidMessage(_describe(exc)) from None

    if isinstance(message, TextMessage) and len(message.data) > limits.max_text_chars:
        raise InvalidMessage(
            f"text is too long: {len(message.data)} characters, over the "
            f"{limits.max_text_chars}-character limit"
        )
    return message  # type: ignore[return-value]


def message_id(msg: Message, amqp_message_id: str | None) -> str:
    """The id used in logs and the DLQ: the body's id, else the AMQP message_id, else a new uuid.

    The body's id comes first because it is the producer's own choice: aio-pika (aiormq) puts a
    random uuid in the AMQP message_id of every message published without one, so that
    property would hide the id a producer wrote in the JSON.
    """
    if msg.id:
        return msg.id
    if amqp_message_id:
        return printable_id(amqp_message_id)
    return uuid.uuid4().hex


def printable_id(amqp_message_id: str) -> str:
    """A producer's AMQP message_id fit for a log line: what a name may not hold, escaped.

    Only the protocol bounds that property (255 bytes), and a body id's rules cannot refuse
    it. Escaping, not replacing with a new uuid, keeps it the same on every redelivery, which
    the dedupe of redeliveries relies on.
    """
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _NOT_IN_NAME
        else char
        for char in amqp_message_id
    )


def refused_body_id(body: bytes, limits: MessageLimits) -> str | None:
    """The id a producer wrote in a body that parse_message refused, if it is a usable one.

    So that the log line and the DLQ copy of a refused message carry the producer's own id
    rather than the random AMQP message_id aio-pika gives every message. Usable means what a
    valid message's id must be (a non-blank string of at most MAX_ID_CHARS characters, none a
    control or formatting character); anything else, or a body too big or not a JSON object,
    gives None. It reads the body the way parse_message does (linear in its size, the size
    limit first), so a hostile body costs at most as much again.
    """
    if len(body) > limits.max_body_bytes:
        return None  # not even parse_message reads past the size limit
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
        raw = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    if not isinstance(raw, dict):
        return None
    value = _none_if_blank(raw.get("id"))
    if not isinstance(value, str):
        return None
    try:
        return _check_id(value)
    except ValueError:
        return None


def _deeper_than(value: Any, limit: int) -> bool:
    """True if containers nest more than `limit` levels; iterative, so no recursion limit."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _too_deep(limits: MessageLimits) -> str:
    return f"JSON is nested deeper than {limits.max_json_depth} levels"


# What each field must be, for "'x' must be ..., got ..." lines (pydantic's wording names
# Python types, which mean nothing to a producer writing JSON).
_EXPECTED = {
    "interrupt": "true or false",
    "timestamp": "a string or a number",
}
_TYPE_ERRORS = {"string_type", "bool_type", "float_type", "int_type", "none_required"}


def _describe(exc: pydantic.ValidationError) -> str:
    """One line for the first field pydantic rejected (and how many other fields were wrong)."""
    errors = exc.errors(include_url=False)
    # Unions report one error per member under loc (field, member); group them by field.
    fields = list(dict.fromkeys(str(e["loc"][0]) if e["loc"] else "" for e in errors))
    field = fields[0]
    first = errors[0]
    kind = first["type"]
    if kind == "literal_error" and field == "format":
        line = (
            f"unsupported audio format {_show(first['input'])} "
            f"(supported: {', '.join(AUDIO_FORMATS)})"
        )
    elif kind == "literal_error" and field == "action":
        line = (
            f"unknown control action {_show(first['input'])} "
            f"(expected {_choices(CONTROL_ACTIONS)})"
        )
    elif kind == "missing":
        line = f"'{field}' is required"
    elif kind == "value_error":
        # Our own validators: either a fragment about the field or a whole sentence.
        text = str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
        line = text if text.startswith("'") else f"'{field}' {text}"
    elif kind in _TYPE_ERRORS:
        expected = _EXPECTED.get(field, "a string")
        line = f"'{field}' must be {expected}, got {_json_kind(first['input'])}"
    else:
        where = f"'{field}': " if field else ""
        line = f"{where}{first['msg']}"
    if len(fields) > 1:
        others = ", ".join(f"'{f}'" for f in fields[1:])
        line += f" (also wrong: {others})"
    return _one_line(line)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _choices(options: tuple[str, ...]) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1]


def _show(value: Any, limit: int = 40) -> str:
    # Shown as JSON (the producer's language); escaping keeps producer text on one line.
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
