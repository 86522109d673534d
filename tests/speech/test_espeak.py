"""espeak-ng speaks any voice it lists, one chunk per sentence, and says clearly when it cannot."""

from __future__ import annotations

import numpy as np
import pytest

from poc.speech.base import InvalidSpeechRequest, SpeechError, VoiceInfo
from poc.speech.espeak import EspeakProvider, parse_voice_list, voice_infos

from .audio_helpers import rms

TEXT = "This is the first sentence. And here is a second one! Is there a third?"


@pytest.fixture(scope="module")
def espeak() -> EspeakProvider:
    return EspeakProvider(48000)


def test_one_audible_chunk_per_sentence_at_the_stream_rate(espeak: EspeakProvider) -> None:
    chunks = list(espeak.synthesize_stream(TEXT))
    assert len(chunks) == 3
    for chunk, words in zip(chunks, (5, 6, 4), strict=True):
        assert chunk.audio.dtype == np.int16 and rms(chunk.audio) > 500
        assert words / 6 < len(chunk.audio) / 48000 < words / 1.2
        assert chunk.phonemes == ()  # espeak-ng gives no timings


def test_the_rate_follows_the_stream() -> None:
    slow = EspeakProvider(16000).synthesize("Rate check.")
    fast = EspeakProvider(44100).synthesize("Rate check.")
    assert len(slow.audio) / 16000 == pytest.approx(len(fast.audio) / 44100, rel=0.01)


def test_text_that_looks_like_an_option_is_spoken_not_obeyed(espeak: EspeakProvider) -> None:
    chunk = espeak.synthesize("--voices -v de hello")
    assert rms(chunk.audio) > 500 and len(chunk.audio) > 48000 * 0.5


@pytest.mark.parametrize("voice", ["en-us", "EN-US", "en", "English_(America)", "gmw/en-US"])
def test_voices_by_language_name_or_file(espeak: EspeakProvider, voice: str) -> None:
    espeak.check_voice(voice, None)


def test_a_language_alone_picks_its_voice(espeak: EspeakProvider) -> None:
    espeak.check_voice(None, "de")
    assert rms(espeak.synthesize("Guten Tag.", language="de").audio) > 500
    espeak.check_voice("en-us", "en_US")


def test_unknown_voices_and_languages_are_permanent_errors(espeak: EspeakProvider) -> None:
    unknown = "unknown voice 'no-such-voice' for espeak; available"
    with pytest.raises(InvalidSpeechRequest, match=unknown):
        espeak.synthesize_stream("Hi.", voice="no-such-voice")
    with pytest.raises(InvalidSpeechRequest, match="language 'tlh' has no espeak-ng voice"):
        espeak.check_voice(None, "tlh")
    with pytest.raises(InvalidSpeechRequest, match="language 'en' is not spoken by espeak voice"):
        espeak.check_voice("de", "en")
    with pytest.raises(InvalidSpeechRequest, match="nothing to speak"):
        espeak.synthesize("?!")


def test_a_missing_binary_is_a_clear_transient_error() -> None:
    missing = EspeakProvider(48000, binary="espeak-ng-not-installed")
    with pytest.raises(SpeechError, match="espeak-ng is not installed"):
        missing.synthesize("Hello.")


def test_voice_list_parsing_prefers_the_best_ranked_alternative() -> None:
    listing = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)\n"
        " 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n"
        " 5  cmn             --/M      Chinese_(Mandarin) sit/cmn              (zh-cmn 5)(zh 5)\n"
    )
    voices = parse_voice_list(listing)
    assert voices["en"].argument == "en-gb"
    assert voices["english_(america)"].argument == "en-us"
    assert voices["zh"].argument == "cmn" and voices["sit/cmn"].language == "cmn"


def test_list_voices_gives_every_voice_once_by_an_id_check_voice_accepts(
    espeak: EspeakProvider,
) -> None:
    voices = espeak.list_voices()
    assert VoiceInfo("en-us", "English (America)", "en-us") in voices
    assert len({v.id.lower() for v in voices}) == len(voices) > 50
    for listed in voices:
        espeak.check_voice(listed.id, listed.language)


def test_voice_rows_keep_names_readable_and_ids_distinct() -> None:
    listing = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  yue             --/M      Chinese_(Cantonese) sit/yue              (zhy 5)\n"
        " 5  yue             --/M      Chinese_(Cantonese,_latin_as_Jyutping) "
        "sit/yue-Latn-jyutping\n"
    )
    assert voice_infos(listing) == [
        VoiceInfo("yue", "Chinese (Cantonese)", "yue"),
        VoiceInfo("sit/yue-Latn-jyutping", "Chinese (Cantonese, latin as Jyutping)", "yue"),
    ]


def test_text_mostly_in_a_script_the_voice_cannot_read_is_refused(espeak: EspeakProvider) -> None:
    """The English voice read 15 Chinese characters as "Chinese letter ..." for 9 s; now the
    message is refused with a reason (as piper's are), and a voice for it speaks it."""
    with pytest.raises(InvalidSpeechRequest, match="Han script"):
        espeak.synthesize_stream("欢迎来到我们的直播间今天有特价商品")
    assert len(espeak.synthesize("欢迎来到我们的直播间", voice="cmn").audio) > 0
    assert len(espeak.synthesize("Welcome to Київ and our shop.").audio) > 0  # a name in passing
