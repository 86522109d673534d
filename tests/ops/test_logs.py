"""Secrets are masked where they stand as a token, never inside ordinary words."""

from __future__ import annotations

import io
import logging

import pytest

from poc.config import load_settings
from poc.ops.logs import Redactor, RedactSecrets

COMMON_FRAGMENTS = ["acc", "the", "ing", "test"]
REAL_LOOKING = "sk-proj-9fQ2xL7vR4tZ8wK1mN3b"


def logged(secrets: list[str], message: str, *args: object, exc: BaseException | None = None) -> str:
    """What a handler with poc's filter writes for one record (formatted as the service does)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    logger = logging.getLogger(f"poc.test_logs.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        if exc is None:
            logger.warning(message, *args)
        else:
            try:
                raise exc
            except BaseException:
                logger.exception(message, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.parametrize("key", COMMON_FRAGMENTS)
def test_a_short_key_is_left_inside_other_words(key):
    text = "accepted audio message; testing thing is running: latest attestation, breathe, theory, singing"
    assert logged([key], text).strip() == f"WARNING {text}"


@pytest.mark.parametrize("key", COMMON_FRAGMENTS)
def test_a_short_key_is_masked_where_it_stands_as_a_token(key):
    cases = {
        f"publishing to rtmp://127.0.0.1:1935/live/{key}": "publishing to rtmp://127.0.0.1:1935/live/***",
        f"publishing to rtmp://host/live/{key}?vhost=x": "publishing to rtmp://host/live/***?vhost=x",
        f"request with key={key}&voice=joe": "request with key=***&voice=joe",
        f'body {{"api_key": "{key}", "accepted": true}}': 'body {"api_key": "***", "accepted": true}',
        f"password: {key}": "password: ***",
        f"Authorization: Bearer {key}": "Authorization: Bearer ***",
        f"stream key {key} refused (quoted '{key}')": "stream key *** refused (quoted '***')",
    }
    for text, expected in cases.items():
        assert logged([key], text).strip() == f"WARNING {expected}"


def test_real_looking_secrets_never_appear():
    password, stream_key = "Zx9!p@ss/w0rd", "live_8f3a9c2e1b7d4f60"
    secrets = [REAL_LOOKING, password, stream_key]
    lines = [
        logged(secrets, "connecting to %s", f"rtmp://a.rtmp.youtube.com/live2/{stream_key}"),
        logged(secrets, "GET /v1/voices?key=%s HTTP/1.1", REAL_LOOKING),
        logged(secrets, 'sent {"api_key": "%s", "text": "hi"}', REAL_LOOKING),
        logged(secrets, "headers: {'xi-api-key': '%s'}", REAL_LOOKING),
        logged(secrets, "amqp://guest:%s@broker/", "Zx9%21p%40ss%2Fw0rd"),  # the password URL-quoted
        logged(secrets, "login failed for password=%s", password),
        logged(secrets, "vendor said no", exc=RuntimeError(f"401 for key {REAL_LOOKING} at /{stream_key}")),
    ]
    for line in lines:
        assert "***" in line
        for secret in (*secrets, "Zx9%21p%40ss%2Fw0rd"):
            assert secret not in line, line
    assert "RuntimeError: 401 for key *** at /***" in lines[-1]


def test_authorization_values_are_masked_whatever_they_hold():
    # Basic auth carries an encoding of a key, not the key itself: masked without knowing it.
    redact = Redactor()
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer ***"
    assert redact("{'Authorization': 'Basic dXNlcjprZXk='}") == "{'Authorization': 'Basic ***'}"
    assert redact("authorization=Token 12345; next") == "authorization=Token ***; next"
    assert redact("sent bearer eyJhbGciOi.x.y to the vendor") == "sent bearer *** to the vendor"
    assert redact("an authorization failure (401)") == "an authorization failure (401)"


def test_the_longest_secret_wins_where_one_contains_another():
    assert Redactor(["abc", "abcdef"])("token abcdef and abc") == "token *** and ***"


def test_the_settings_secrets_are_masked_but_not_inside_words():
    environ = {
        "POC_ENV_FILE": "/nonexistent",
        "RTMP_URL": "rtmp://127.0.0.1:1935/live/acc",
        "RABBITMQ_PASSWORD": "ing",
        "TTS_API_KEY": REAL_LOOKING,
    }
    secrets = load_settings(environ, check_files=False).secrets()
    out = logged(secrets, "accepted audio message m-1 (%s) streaming to %s", "thinking", environ["RTMP_URL"])
    assert out.strip() == "WARNING accepted audio message m-1 (thinking) streaming to rtmp://127.0.0.1:1935/live/***"
    assert REAL_LOOKING not in logged(secrets, "key %s rejected", REAL_LOOKING)
