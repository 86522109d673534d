"""AudioHost: speech served by URL for a vendor that fetches audio itself (Tavus)."""

from __future__ import annotations

import httpx

from poc.face.hosted.audio_host import AudioHost


def test_published_audio_is_served_at_its_url_and_nothing_else_is() -> None:
    with AudioHost("", ttl_seconds=60) as host:
        url = host.publish(b"RIFF-first")
        other = host.publish(b"RIFF-second")
        assert httpx.get(url).content == b"RIFF-first"
        assert httpx.get(other).content == b"RIFF-second"
        guessed = url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA.wav"
        assert httpx.get(guessed).status_code == 404


def test_the_public_url_is_the_operators_and_old_files_go() -> None:
    with AudioHost("https://poc.example.com/audio/", max_files=2) as host:
        first = host.publish(b"1")
        host.publish(b"2")
        host.publish(b"3")
        assert first.startswith("https://poc.example.com/audio/") and first.endswith(".wav")
        local = f"http://127.0.0.1:{host.port}/{first.rsplit('/', 1)[1]}"
        assert httpx.get(local).status_code == 404  # beyond max_files: dropped


def test_files_expire_after_their_ttl() -> None:
    with AudioHost("", ttl_seconds=0.0) as host:
        url = host.publish(b"gone")
        assert httpx.get(url).status_code == 404
