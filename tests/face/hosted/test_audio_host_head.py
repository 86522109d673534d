"""AudioHost answers HEAD as it answers GET, without the body.

A fetcher may look at a URL before it downloads it (is it there, is it audio, how big): a
501 "Unsupported method" to that HEAD fails the vendor's job, and the local engine speaks
every message.
"""

from __future__ import annotations

import httpx

from poc.face.hosted.audio_host import AudioHost

WAV = b"RIFF" + bytes(1000)


def test_a_head_request_is_answered_like_the_get_without_the_body() -> None:
    with AudioHost("", ttl_seconds=60) as host:
        url = host.publish(WAV)
        with httpx.Client() as client:
            head = client.head(url)
            assert head.status_code == 200
            assert head.headers["content-type"] == "audio/wav"
            assert head.headers["content-length"] == str(len(WAV))
            assert head.content == b""
            # The connection stays usable: the GET after it gets the whole file.
            assert client.get(url).content == WAV


def test_a_head_request_for_an_unknown_file_is_a_404() -> None:
    with AudioHost("", ttl_seconds=60) as host:
        url = host.publish(WAV)
        guessed = url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA.wav"
        assert httpx.head(guessed).status_code == 404
