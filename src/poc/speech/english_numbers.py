"""English words for what a shop host says with numbers: prices, units, phone numbers, times.

Why: the offline voices (piper and espeak) phonemize with espeak-ng, which reads shop text the
way nobody speaks it: "$19.99" is "dollar nineteen point nine nine", "€5" "euros five", "3kg"
"three kay gee", "256GB" "two hundred fifty six gee bee", "555-1234" "five hundred fifty five
dash one thousand two hundred thirty four", "10:05am" "ten zero five a m". Cloud voices
normalize text themselves, in many languages, so this is for the local English voices only.

`spoken_english` rewrites only the well-formed patterns below, in words, and leaves everything
else exactly as it is:

- amounts in $, £, € (before the number; € and ¢ also after it) and USD/EUR/GBP codes, with
  thousands separators, cents, a minus sign, a scale ("$2.5M", "$3 million"), a range
  ("$5-$10", "$5-10") and a period ("$9.99/mo"). "$19.99" is "nineteen dollars and ninety-nine
  cents": the casual "nineteen ninety-nine" drops the currency (a stream may quote £ and €
  too) and sounds like a year; the full form is right in any sentence ("save $0.50");
- numbers with a unit: mass, length, volume, storage (KB...PB), data rates, speed, °C/°F,
  power, frequency, durations ("3kg", "256GB", "5-10 km", "-5°C"). A unit that is also a
  word or a lone letter ("in", "l", "L", "W", "V") counts only when glued to its number ("5in",
  not "1 in 3"). "m" is left alone: "2m" is metres on a cable and millions on a follower count;
  "G" too ("5G" is a network). Lower-case "gb" is read as gigabytes (shops write "256gb");
  "Gb" (bits) is left alone;
- phone numbers in their usual shapes (555-1234, (555) 123-4567, 555.123.4567, 1-800-555-1234,
  +1 555 123 4567, +44 20 7946 0958), read digit by digit in their groups; "200-3000" has the
  shape of 555-1234 but round numbers on both sides make it a range ("500-1000 mg");
- clock times: "10:30am" -> "ten thirty AM" (espeak reads a lower-case "am" as the verb),
  "10:05" -> "ten oh five", "10:00" -> "ten o'clock", "18:00" -> "eighteen hundred", "9am-5pm"
  -> "nine AM to five PM".

Left as they are, on purpose: plain numbers and years ("2026", espeak reads them well),
ordinals ("3rd"), versions ("v2.1"), percentages, scores and plain ranges ("3-2", "2-3 days":
"three to two" or "three two" cannot be told apart), durations ("3:00 min": minutes and seconds,
or hours and minutes?), dates (US and EU order differ), a comma as the decimal mark ("12,50 €"),
numbers of 10^15 and more. The output holds no digits where it changed something, so applying
it again changes nothing.
"""

from __future__ import annotations

import re

import attrs

_SMALL = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_TOO_LARGE = 10**15  # beyond what a shop says: left as digits

# A number as written in English: thousands groups of three, a dot before decimals.
_NUMBER = r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?"
# Not the tail of a word, a version, another number or a code ("v2.1", "1.2.3", "1,5", "A-5").
_STARTS = r"(?<![\w.,$£€])(?<!\w-)"
# A minus sign, at the start or after a space or an opening bracket (not a hyphen in "A-5").
_MINUS = r"(?:(?<![^\s(\[])(?P<minus>[-\u2212]))?"
_SPACE = "[ \u00a0\u202f]?"  # at most one space, a no-break one too ("20\u202f°C"); no line break
_DASH = rf"{_SPACE}[-\u2013]{_SPACE}"  # a range's hyphen or en dash
_ENDS = r"(?![\w$£€°]|[.,][0-9])"


@attrs.frozen
class _Currency:
    one: str
    many: str
    cent: str | None = None  # None: no smaller unit, decimals are read with "point"
    cents: str | None = None


_DOLLAR = _Currency("dollar", "dollars", "cent", "cents")
_CURRENCIES = {
    "$": _DOLLAR,
    "£": _Currency("pound", "pounds", "penny", "pence"),
    "€": _Currency("euro", "euros", "cent", "cents"),
    "¢": _Currency("cent", "cents"),
    "USD": _Currency("US dollar", "US dollars", "cent", "cents"),
    "EUR": _Currency("euro", "euros", "cent", "cents"),
    "GBP": _Currency("pound", "pounds", "penny", "pence"),
}
_CODE_OF_SYMBOL = {"$": "USD", "€": "EUR", "£": "GBP"}
_ABBREVIATED_SCALES = {"k": "thousand", "m": "million", "b": "billion", "bn": "billion"}
_PERIODS = {  # "$9.99/mo": "a month"
    "mo": "a month", "month": "a month", "yr": "a year", "year": "a year", "wk": "a week",
    "week": "a week", "day": "a day", "night": "a night", "hr": "an hour", "hour": "an hour",
    "person": "per person",
}  # fmt: skip


def _scale(tag: str) -> str:
    return (
        # any case: a headline writes "$2.5 Billion"
        rf"(?:{_SPACE}(?P<word{tag}>(?i:thousand|million|billion|trillion))\b"
        rf"|(?P<abbr{tag}>bn|[kKmMbB])(?!\w))?"
    )


_UNITS: dict[str, tuple[str, str]] = {
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "fl oz": ("fluid ounce", "fluid ounces"),
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "in": ("inch", "inches"),
    "ml": ("milliliter", "milliliters"),
    "l": ("liter", "liters"),
    "kb": ("kilobyte", "kilobytes"),
    "mb": ("megabyte", "megabytes"),
    "gb": ("gigabyte", "gigabytes"),
    "tb": ("terabyte", "terabytes"),
    "pb": ("petabyte", "petabytes"),
    "kbps": ("kilobit per second", "kilobits per second"),
    "mbps": ("megabit per second", "megabits per second"),
    "gbps": ("gigabit per second", "gigabits per second"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "°c": ("degree Celsius", "degrees Celsius"),
    "°f": ("degree Fahrenheit", "degrees Fahrenheit"),
    "mah": ("milliamp hour", "milliamp hours"),
    "wh": ("watt hour", "watt hours"),
    "kwh": ("kilowatt hour", "kilowatt hours"),
    "w": ("watt", "watts"),
    "kw": ("kilowatt", "kilowatts"),
    "v": ("volt", "volts"),
    "hz": ("hertz", "hertz"),
    "khz": ("kilohertz", "kilohertz"),
    "mhz": ("megahertz", "megahertz"),
    "ghz": ("gigahertz", "gigahertz"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
}
# Written in any case ("5KG", "60 MPH"): none of them is a word or means something else in caps.
_ANY_CASE_UNITS = (
    "kg mg lb lbs oz km cm mm ft ml mph kph km/h mah kwh khz mhz ghz min mins hr hrs sec secs"
).split() + ["fl oz"]
# Only as written here: "g", "mi", "in", "l", "L" ... are words or letters in other cases
# ("5G" is a network, "Gb" is bits, "mb" lower-case is shops' megabytes).
_EXACT_UNITS = (
    "g mi in l L KB kB MB GB TB PB kb mb gb tb pb Kbps kbps Mbps Gbps gbps "
    "Wh kWh W kW V Hz hz °C °F ºC ºF"
).split() + ["° C", "° F"]
# Words or lone letters: a unit only when glued to its number ("5in", not "1 in 3").
_GLUED_ONLY = frozenset("in l L W V".split())


def _unit_alternatives() -> str:
    any_case = "|".join(re.escape(u) for u in sorted(_ANY_CASE_UNITS, key=len, reverse=True))
    exact = "|".join(re.escape(u) for u in sorted(_EXACT_UNITS, key=len, reverse=True))
    # Longest first inside each group, and the any-case group first, so "km/h" wins over "km".
    return rf"(?i:{any_case})|{exact}"


def _unit_names(unit: str) -> tuple[str, str]:
    return _UNITS[unit.lower().replace("º", "°").replace("° ", "°")]


_PHONE = re.compile(
    r"(?<![\w$£€.,:/+\-])"
    r"(?:"  # the first shape that fits wins: US before international ("+1 555 123 4567 10")
    r"(?:\+?1[\-. ])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[\-. ])[0-9]{3}[\-. ][0-9]{4}"
    r"|\+[0-9]{1,3}(?:[ \-][0-9]{1,4}){2,5}"  # international: +44 20 7946 0958
    r"|\+[0-9]{8,15}"  # E.164 without separators
    r"|[2-9][0-9]{2}-[0-9]{4}"  # US local: 555-1234 (not "100-1000": no exchange starts 0, 1)
    r")"
    r"(?![\w\-]|[.,][0-9])"
)
_MONEY = re.compile(
    _MINUS
    + _STARTS
    + r"(?P<symbol>[$£€])"
    + rf"(?P<number>{_NUMBER}){_scale('')}"
    + rf"(?:{_DASH}(?P=symbol)?(?P<number2>{_NUMBER}){_scale('2')})?"
    + rf"(?:{_SPACE}(?P<code>USD|EUR|GBP)\b)?"
    + rf"(?:/(?P<per>{'|'.join(_PERIODS)}|{_unit_alternatives()})(?![\w/]))?"
    + _ENDS
)
_MONEY_SYMBOL_AFTER = re.compile(  # "5€", "99¢", "20 USD"
    _MINUS
    + _STARTS
    + rf"(?P<number>{_NUMBER}){_scale('')}{_SPACE}(?P<code>€|¢|USD|EUR|GBP)"
    + _ENDS
)
_MONEY_CODE_FIRST = re.compile(  # "USD 20"
    _MINUS
    + r"(?<![\w$£€])(?P<code>USD|EUR|GBP)"
    + rf"{_SPACE}(?P<number>{_NUMBER}){_scale('')}"
    + _ENDS
)


def _clock(tag: str) -> str:
    return (
        rf"(?P<hour{tag}>[0-9]{{1,2}})(?::(?P<minute{tag}>[0-5][0-9]))?"
        rf"(?:{_SPACE}(?P<half{tag}>[aApP])\.?[mM](?P<dot{tag}>\.)?(?!\w))?"
    )


_TIME = re.compile(
    r"(?<![\w:.,$£€/])(?<!\w-)"
    + _clock("")
    + rf"(?:{_DASH}{_clock('2')})?"
    + r"(?![\w:$£€°%]|[.,][0-9])"
)
# "3:00 min", "1:30-2:00 hrs": a duration (minutes and seconds, or hours and minutes?), not
# a time of day
_DURATION_UNIT = re.compile(rf"{_SPACE}(?i:min|mins|minutes?|hr|hrs|hours?|h|sec|secs|seconds?)\b")
_WITH_UNIT = re.compile(
    _MINUS
    + _STARTS
    + r"(?<![0-9]:)"  # not the minutes of "3:00 min"
    + rf"(?P<number>{_NUMBER})(?:{_DASH}(?P<number2>{_NUMBER}))?"
    + rf"(?P<space>{_SPACE})(?P<unit>{_unit_alternatives()})"
    + r"(?![\w°])"
)


def spoken_english(text: str) -> str:
    """`text` with its prices, units, phone numbers and clock times in English words, the way
    a US shop host says them; everything else, and text without them, exactly as it was."""
    if not any(char.isdigit() for char in text):
        return text  # every pattern holds a digit
    text = _PHONE.sub(_phone_words, text)
    text = _MONEY.sub(_money_words, text)
    text = _MONEY_SYMBOL_AFTER.sub(_money_words, text)
    text = _MONEY_CODE_FIRST.sub(_money_words, text)
    text = _TIME.sub(_time_words, text)
    return _WITH_UNIT.sub(_unit_words, text)


def _phone_words(match: re.Match[str]) -> str:
    groups = re.findall(r"[0-9]+", match.group())
    if not 7 <= sum(len(group) for group in groups) <= 15 or _is_round_range(match.group(), groups):
        return match.group()
    said = ", ".join(_digit_words(group) for group in groups)  # a comma: a pause between groups
    return f"plus {said}" if match.group().startswith("+") else said


def _is_round_range(written: str, groups: list[str]) -> bool:
    """"200-3000", "500-1000 mg": the local shape of a US number, but round numbers on both
    sides are a range ("pages 200-3000") far more often than a phone number."""
    local = len(groups) == 2 and not written.startswith("+")
    return local and all(group.endswith("0") for group in groups)


def _money_words(match: re.Match[str]) -> str:
    parts = match.groupdict()
    symbol, code = parts.get("symbol"), parts["code"]
    if symbol and code and _CODE_OF_SYMBOL[symbol] != code:
        return match.group()  # "$5 EUR": which one is meant?
    currency = _CURRENCIES[code or symbol or "$"]
    scale = _scale_word(parts["word"], parts["abbr"])
    said = _amount(parts["number"], scale, currency)
    if said is None:
        return match.group()
    if parts.get("number2"):
        said = _money_range(parts, scale, currency)
        if said is None:
            return match.group()
    if parts.get("per"):
        per = parts["per"]
        said += f" {_PERIODS[per]}" if per in _PERIODS else f" per {_unit_names(per)[0]}"
    return f"minus {said}" if parts["minus"] else said


def _money_range(
    parts: dict[str, str | None], scale: str | None, currency: _Currency
) -> str | None:
    """"$5-$10" -> "five to ten dollars"; "$5.99-$10" -> "five dollars and ninety-nine cents
    to ten dollars" (cents on one side: each amount whole)."""
    first, second = parts["number"] or "", parts["number2"] or ""
    scale2 = _scale_word(parts["word2"], parts["abbr2"])
    if "." not in first + second and scale in (scale2, None):
        # "$5-10", "$2-3 million": the currency once, at the end
        words, words2 = _number_words(first), _number_words(second)
        if words is None or words2 is None:
            return None
        return " ".join(filter(None, [words, "to", words2, scale2, currency.many]))
    said, said2 = _amount(first, scale, currency), _amount(second, scale2, currency)
    return None if said is None or said2 is None else f"{said} to {said2}"


def _scale_word(word: str | None, abbreviation: str | None) -> str | None:
    if word:
        return word.lower()
    return _ABBREVIATED_SCALES[abbreviation.lower()] if abbreviation else None


def _amount(number: str, scale: str | None, currency: _Currency) -> str | None:
    """"19.99" in dollars -> "nineteen dollars and ninety-nine cents"; None when too large."""
    words = _number_words(number)
    if words is None:
        return None
    whole, _, decimals = number.replace(",", "").partition(".")
    if scale:
        return f"{words} {scale} {currency.many}"  # "two point five million dollars"
    if not decimals:
        return f"{words} {currency.one if int(whole) == 1 else currency.many}"
    if len(decimals) != 2 or currency.cents is None:
        return f"{words} {currency.many}"  # "one point five dollars"
    units, cents = int(whole), int(decimals)
    units_said = f"{_integer_words(units)} {currency.one if units == 1 else currency.many}"
    cents_said = f"{_integer_words(cents)} {currency.cent if cents == 1 else currency.cents}"
    if cents == 0:
        return units_said
    return cents_said if units == 0 else f"{units_said} and {cents_said}"


def _time_words(match: re.Match[str]) -> str:
    parts = match.groupdict()
    hour, minute, half = parts["hour"], parts["minute"], parts["half"]
    if not (half or parts["half2"]) and _DURATION_UNIT.match(match.string, match.end()):
        return match.group()
    if parts["hour2"] is None:
        said = _clock_words(hour, minute, half) if minute or half else None
    else:
        said = _time_range(parts)
    if said is None:
        return match.group()
    # A dotted "a.m." may end the sentence: its dot stays where nothing follows it.
    ends_text = not match.string[match.end() :].strip()
    dotted = parts["dot2"] if parts["hour2"] is not None else parts["dot"]
    return f"{said}." if dotted and ends_text else said


def _time_range(parts: dict[str, str | None]) -> str | None:
    """"9am-5pm" -> "nine AM to five PM"; "9-11am" -> "nine to eleven AM" (the first takes
    the second's AM); "3-2" (a score?) and "10-12:30" (minutes?) are not times: None."""
    hour, minute, half = parts["hour"] or "", parts["minute"], parts["half"]
    hour2, minute2, half2 = parts["hour2"] or "", parts["minute2"], parts["half2"]
    if not (minute2 or half2) or not (minute or half or half2):
        return None
    if half or not half2:
        said = _clock_words(hour, minute, half)
    else:  # said without the AM it takes from the second time, if that is a valid hour for it
        said = _hour_and_minute(hour, minute) if 1 <= int(hour) <= 12 else None
    said2 = _clock_words(hour2, minute2, half2)
    return None if said is None or said2 is None else f"{said} to {said2}"


def _clock_words(hour_digits: str, minute_digits: str | None, half: str | None) -> str | None:
    """"10", "05", "a" -> "ten oh five AM"; "10", "00", None -> "ten o'clock"; "18", "00" ->
    "eighteen hundred"; None for an hour the clock does not have."""
    hour, minute = int(hour_digits), int(minute_digits or 0)
    if half:
        if not 1 <= hour <= 12:
            return None
        return f"{_hour_and_minute(hour_digits, minute_digits)} {half.upper()}M"
    if hour > 23:
        return None
    if minute:
        return _hour_and_minute(hour_digits, minute_digits)
    on_the_hour = "o'clock" if 1 <= hour <= 12 else "hundred"  # "eighteen hundred" on a 24 h clock
    return f"{_integer_words(hour)} {on_the_hour}"


def _hour_and_minute(hour_digits: str, minute_digits: str | None) -> str:
    hour, minute = int(hour_digits), int(minute_digits or 0)
    if not minute:
        return _integer_words(hour)
    if minute < 10:
        return f"{_integer_words(hour)} oh {_SMALL[minute]}"  # "ten oh five", not "ten five"
    return f"{_integer_words(hour)} {_integer_words(minute)}"


def _unit_words(match: re.Match[str]) -> str:
    unit = match.group("unit")
    if match.group("space") and unit in _GLUED_ONLY:
        return match.group()  # "1 in 3": a word, not inches
    one, many = _unit_names(unit)
    number, number2 = match.group("number"), match.group("number2")
    words = _number_words(number)
    words2 = _number_words(number2) if number2 else ""
    if words is None or words2 is None:
        return match.group()
    said = f"{words} to {words2} {many}" if number2 else f"{words} {one if number == '1' else many}"
    return f"minus {said}" if match.group("minus") else said


def _number_words(number: str) -> str | None:
    """"1,299.5" -> "one thousand two hundred ninety-nine point five"; None from 10^15 up."""
    whole, _, decimals = number.replace(",", "").partition(".")
    value = int(whole)
    if value >= _TOO_LARGE:
        return None
    words = _integer_words(value)
    return f"{words} point {_digit_words(decimals)}" if decimals else words


def _integer_words(value: int) -> str:
    """US style, without "and": 1299 -> "one thousand two hundred ninety-nine"."""
    if value < 20:
        return _SMALL[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + (f"-{_SMALL[ones]}" if ones else "")
    if value < 1000:
        hundreds, rest = divmod(value, 100)
        return f"{_SMALL[hundreds]} hundred" + (f" {_integer_words(rest)}" if rest else "")
    for size, name in _SCALES:
        if value >= size:
            high, rest = divmod(value, size)
            return f"{_integer_words(high)} {name}" + (f" {_integer_words(rest)}" if rest else "")
    raise AssertionError("unreachable: every value from 1000 up has a scale")


def _digit_words(digits: str) -> str:
    return " ".join(_SMALL[int(digit)] for digit in digits)
