"""A STUDIO_TOKEN with letters beyond ASCII (a passphrase in the operator's language) works from
a script as it does from the login form. The real app on a real socket; the header is sent as
curl sends it, the token's UTF-8 bytes."""

from __future__ import annotations

import json

import pytest
from support.operator import RecordingPublisher, StandInService, call, make_settings, serving

pytestmark = pytest.mark.anyio

TOKENS = ["Grüße-aus-Köln-2024", "пароль-для-студии-42"]  # within Latin-1, and beyond it


@pytest.mark.parametrize("token", TOKENS)
async def test_a_non_ascii_token_sent_as_utf8_by_a_script_is_accepted(token: str) -> None:
    publisher = RecordingPublisher()
    service = StandInService(make_settings(HTTP_HOST="0.0.0.0", STUDIO_TOKEN=token))
    bearer = {"Authorization": f"Bearer {token}"}  # call() encodes the head as UTF-8, as curl does
    async with serving(service.app(publisher)) as port:
        status, _, _ = await call(port, "GET", "/api/status", headers=bearer)
        said, _, body = await call(port, "POST", "/api/say", {"text": "Hallo."}, bearer)
        wrong, _, _ = await call(port, "GET", "/api/status", headers={"Authorization": f"Bearer {token}x"})
    assert (status, said, wrong) == (200, 202, 401), body
    assert [sent["data"] for sent in publisher.sent] == ["Hallo."]
    assert json.loads(body)["id"] == publisher.sent[0]["id"]
