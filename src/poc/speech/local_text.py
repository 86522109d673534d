"""What the offline voices (piper, espeak, pyttsx3) make of a text before they speak it.

All three phonemize with espeak-ng (pyttsx3 through its Linux driver), so they share its
weaknesses and the same remedies: a voice speaks one language, and its English voice spells text
in another script out letter by letter ("Chinese letter...", for minutes), so such text is
refused with a reason; and espeak-ng reads "$19.99" as "dollar nineteen point nine nine", so an
English voice gets prices, units, phone numbers and times in words. Cloud voices do both
themselves and never come here.
"""

from __future__ import annotations

from poc.speech.english_numbers import spoken_english
from poc.speech.scripts import require_readable
from poc.speech.sentences import language_matches, require_speakable


def sentences_to_say(text: str, language: str, voice: str) -> list[str]:
    """The sentences a local voice speaking `language` (named `voice` in errors) is to say.
    Raises InvalidSpeechRequest for text with nothing to say or mostly in a script that voice
    cannot read."""
    sentences = require_speakable(text)
    require_readable(text, language, voice)
    if language_matches("en", language):
        sentences = [spoken_english(sentence) for sentence in sentences]
    return sentences
