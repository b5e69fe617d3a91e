"""Number/digit/date word sequences (English and Mandarin) and their audio assembly."""
from __future__ import annotations

import datetime
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from media.errors import LocalMediaError, PromptNotFoundError
from media.player import Playlist, PromptCache, load_prompt
from media.say import VOCABULARY, PromptSet, date_words, digit_words, number_words, ordinal_words

ROOT = pathlib.Path(__file__).resolve().parents[2]

EN = {
    0: "0", 7: "7", 13: "13", 20: "20", 21: "20 1", 99: "90 9", 100: "1 hundred", 101: "1 hundred 1",
    110: "1 hundred 10", 999: "9 hundred 90 9", 1000: "1 thousand", 1001: "1 thousand 1",
    1010: "1 thousand 10", 12345: "12 thousand 3 hundred 40 5", 100000: "1 hundred thousand",
    1000000: "1 million", 1000001: "1 million 1", 2000300: "2 million 3 hundred",
    1234567890: "1 billion 2 hundred 30 4 million 5 hundred 60 7 thousand 8 hundred 90",
    999999999999: "9 hundred 90 9 billion 9 hundred 90 9 million 9 hundred 90 9 thousand 9 hundred 90 9",
    -42: "minus 40 2",
}

# Expected Mandarin readings, written in characters and mapped to word names.
ZH = {
    0: "零", 2: "二", 10: "十", 11: "十一", 15: "十五", 20: "二十", 22: "二十二", 100: "一百",
    101: "一百零一", 110: "一百一十", 111: "一百一十一", 200: "两百", 222: "两百二十二",
    1000: "一千", 1001: "一千零一", 1010: "一千零一十", 1100: "一千一百", 1200: "一千二百",
    2000: "两千", 2222: "两千二百二十二", 10000: "一万", 10001: "一万零一", 10010: "一万零一十",
    10100: "一万零一百", 11000: "一万一千", 20000: "两万", 22000: "两万两千", 100000: "十万",
    100500: "十万零五百", 110000: "十一万", 150000: "十五万", 200000: "二十万", 1000000: "一百万",
    2000000: "两百万", 10000000: "一千万", 20000000: "两千万", 100000000: "一亿",
    100000001: "一亿零一", 100005000: "一亿零五千", 101000000: "一亿零一百万", 200000000: "两亿",
    1000000000: "十亿", 1234567890: "十二亿三千四百五十六万七千八百九十",
    999999999999: "九千九百九十九亿九千九百九十九万九千九百九十九", -7: "负七",
}
_CHAR = {v: k for k, v in VOCABULARY["zh"].items()}


def zh_chars_to_words(text: str) -> list[str]:
    return [_CHAR[c] for c in text]


@pytest.mark.parametrize("n, words", EN.items())
def test_english_numbers(n, words):
    assert number_words(n, "en") == words.split()


@pytest.mark.parametrize("n, text", ZH.items())
def test_chinese_numbers(n, text):
    assert number_words(n, "zh") == zh_chars_to_words(text)


# Independent readers turn words back into the number: every n round-trips.

_EN_VALUE = {str(i): i for i in range(20)} | {str(10 * i): 10 * i for i in range(2, 10)}


def en_value(words: list[str]) -> int:
    sign = -1 if words[:1] == ["minus"] else 1
    total = current = 0
    for w in words[1:] if sign < 0 else words:
        if w == "hundred":
            current *= 100
        elif w in ("thousand", "million", "billion"):
            total += current * {"thousand": 10**3, "million": 10**6, "billion": 10**9}[w]
            current = 0
        else:
            current += _EN_VALUE[w]
    return sign * (total + current)


_ZH_DIGIT = {"ling": 0, "yi": 1, "er": 2, "liang": 2, "san": 3, "si": 4, "wu": 5, "liu": 6, "qi": 7, "ba": 8, "jiu": 9}
_ZH_POS = {"shi": 10, "bai": 100, "qian": 1000}


def zh_value(words: list[str]) -> int:
    sign = -1 if words[:1] == ["fu"] else 1
    total = section = digit = 0
    for w in words[1:] if sign < 0 else words:
        if w in _ZH_DIGIT:
            digit = _ZH_DIGIT[w]
        elif w in _ZH_POS:
            section += (digit or 1) * _ZH_POS[w]
            digit = 0
        elif w == "wan":
            total += (section + digit) * 10**4
            section = digit = 0
        elif w == "yi4":
            total = (total + section + digit) * 10**8
            section = digit = 0
    return sign * (total + section + digit)


@settings(max_examples=400, deadline=None)
@given(st.integers(-999_999_999_999, 999_999_999_999))
def test_round_trip_both_languages(n):
    en = number_words(n, "en")
    assert en_value(en) == n
    zh = number_words(n, "zh")
    assert zh_value(zh) == n
    body = zh[1:] if n < 0 else zh
    # 零 rules: never doubled, never last (except 0 itself), never first.
    assert not any(a == b == "ling" for a, b in zip(body, body[1:]))
    if n != 0:
        assert body[0] != "ling" and body[-1] != "ling"
    assert all(w in VOCABULARY["zh"] for w in zh) and all(w in VOCABULARY["en"] for w in en)


def test_digits_and_phone_style():
    assert digit_words("+1 (415) 555-0100", "en") == list("14155550100")
    assert digit_words("110", "zh") == ["yi", "yi", "ling"]
    assert digit_words("110", "zh", phone=True) == ["yao", "yao", "ling"]
    with pytest.raises(LocalMediaError, match=r"cannot say '\*'"):
        digit_words("12*", "en")


@pytest.mark.parametrize(
    "date, en, zh",
    [
        (datetime.date(2026, 3, 5), "thursday march fifth 20 20 6", "二零二六年三月五日星期四"),
        (datetime.date(2005, 12, 31), "saturday december 30 first 2 thousand 5", "二零零五年十二月三十一日星期六"),
        (datetime.date(1999, 1, 22), "friday january 20 second 19 90 9", "一九九九年一月二十二日星期五"),
        (datetime.date(1905, 7, 30), "sunday july thirtieth 19 oh 5", "一九零五年七月三十日星期天"),
        (datetime.date(1900, 2, 20), "tuesday february twentieth 19 hundred", "一九零零年二月二十日星期二"),
        (datetime.date(2000, 10, 11), "wednesday october eleventh 2 thousand", "二零零零年十月十一日星期三"),
    ],
)
def test_dates(date, en, zh):
    assert date_words(date, "en") == en.split()
    got = date_words(date, "zh")
    expected = [("xingqi" if c == "@" else _CHAR[c]) for c in zh.replace("星期", "@")]
    assert got == expected


def test_date_options_and_ordinals():
    d = datetime.date(2026, 11, 23)
    assert date_words(d, "en", weekday=False, year=False) == ["november", "20", "third"]
    assert date_words(d, "zh", weekday=False, year=False) == ["shi", "yi", "yue", "er", "shi", "san", "ri"]
    assert ordinal_words(1, "en") == ["first"] and ordinal_words(12, "zh") == ["shi", "er", "ri"]
    with pytest.raises(LocalMediaError, match="days 1-31"):
        ordinal_words(32)


def test_bad_arguments():
    with pytest.raises(LocalMediaError, match="beyond"):
        number_words(10**12)
    with pytest.raises(LocalMediaError, match="needs an int"):
        number_words(1.5)
    with pytest.raises(LocalMediaError, match="no number reading for language 'fr'"):
        number_words(1, "fr")


# ---------------------------------------------------------------- audio


EN_WORDS = sorted(set(number_words(1234567, "en") + digit_words("4155550100", "en")
                     + ["7", "january", "first", "thirtieth", "monday", "oh", "minus"]))


@pytest.fixture(scope="session")
def prompt_root(tmp_path_factory):
    """The whole Mandarin set built by the real CLI, and the English words the
    tests use built through the API (the whole English set is 74 espeak-ng
    runs: too slow for the suite's time budget)."""
    from media.say import build_prompt_set

    root = tmp_path_factory.mktemp("prompts")
    proc = subprocess.run([sys.executable, "-m", "media.say", "build", str(root), "--language", "zh"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"zh: {len(VOCABULARY['zh'])} words written" in proc.stdout
    assert sorted(build_prompt_set(root, "en", words=EN_WORDS)) == EN_WORDS
    return root


@pytest.mark.parametrize("language", ["en", "zh"])
def test_builder_writes_every_word_trimmed(prompt_root, language):
    for word in VOCABULARY[language] if language == "zh" else EN_WORDS:
        pcm, rate = sf.read(str(prompt_root / language / f"{word}.wav"), dtype="int16")
        assert rate == 8000 and 0.1 < pcm.size / 8000 < 2.0, word
        # Trimmed: starts and ends within 10 ms (+1 sample) of speech.
        loud = np.flatnonzero(np.abs(pcm.astype(int)) > 0.02 * np.abs(pcm.astype(int)).max())
        assert loud[0] <= 81 and pcm.size - 1 - loud[-1] <= 81, word


def test_builder_rejects_unknown_words(tmp_path):
    from media.say import build_prompt_set

    with pytest.raises(LocalMediaError, match=r"words \['banana'\] are not in the 'en' prompt vocabulary"):
        build_prompt_set(tmp_path, "en", words=["7", "banana"])


def test_builder_keeps_existing_and_cli_prints_words(prompt_root):
    from media.say import build_prompt_set

    assert build_prompt_set(prompt_root, "zh") == []  # nothing missing
    out = subprocess.run([sys.executable, "-m", "media.say", "words", "100500", "--language", "zh"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["shi", "wan", "ling", "wu", "bai"]


@pytest.mark.parametrize("language, n", [("en", 1234567), ("zh", 100500), ("zh", 2026)])
def test_assembly_is_the_words_in_order_with_gaps(prompt_root, language, n):
    ps = PromptSet(prompt_root, language, gap_ms=30, cache=PromptCache())
    words = number_words(n, language)
    audio = ps.assemble(words)
    parts = [load_prompt(prompt_root / language / f"{w}.wav") for w in words]
    gap = np.zeros(240, np.int16)
    expected = np.concatenate([x for p in parts for x in (gap, p)][1:])
    assert np.array_equal(audio, expected)
    # The same through a Playlist of sources (what the IVR plays).
    frames = []
    pl = Playlist(ps.sources(words))
    while (f := pl.read()) is not None:
        frames.append(f.copy())
    played = np.concatenate(frames)
    assert np.count_nonzero(np.abs(played.astype(int)) > 500) > 0.3 * np.count_nonzero(np.abs(expected.astype(int)) > 500)
    assert played.size >= expected.size


def test_sources_say_numbers_digits_and_dates(prompt_root):
    zh = PromptSet(prompt_root, "zh")
    src = zh.date(datetime.date(2026, 3, 5))
    assert src.samples.size > 8000
    en = PromptSet(prompt_root, "en")
    assert en.digits("4155550100").samples.size > en.number(7).samples.size


def test_missing_word_named(tmp_path):
    ps = PromptSet(tmp_path, "en")
    assert ps.missing(["7", "hundred"]) == ["7", "hundred"]
    with pytest.raises(PromptNotFoundError, match="prompt set 'en' has no word '7'"):
        ps.sources(["7"])
