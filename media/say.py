"""Saying digits, numbers and dates from prompt sets, in English and Chinese.

Theory of operation
-------------------
A *prompt set* is a directory per language holding one 8 kHz WAV per word:
``ROOT/en/7.wav``, ``ROOT/en/hundred.wav``, ``ROOT/zh/wan.wav`` ...  Saying
something is two steps:

1. *words*: pure functions turn a value into a list of word names
   (:func:`number_words`, :func:`digit_words`, :func:`date_words`); they are
   the part worth testing exhaustively and know nothing about audio;
2. *audio*: :class:`PromptSet` maps the words to files and returns sources
   for a :class:`media.player.Playlist` (:meth:`PromptSet.sources`) or one
   assembled int16 array (:meth:`PromptSet.assemble`), with a short gap
   between words.

English (``en``, US style): ``1234567`` → one million, two hundred
thirty-four thousand, five hundred sixty-seven → ``["1", "million", "2",
"hundred", "30", "4", "thousand", "5", "hundred", "60", "7"]``.  Numbers up to
999,999,999,999 (billions); negatives start with ``minus``.  Dates: weekday,
month, ordinal day, year read in pairs (``2026`` → twenty twenty-six,
``2005`` → two thousand five, ``1905`` → nineteen oh five, ``1900`` → nineteen
hundred).

Chinese (``zh``, Mandarin readings, pinyin word names): digits group by four
(个 十 百 千, then 万, then 亿).  Rules implemented:

* 零 (``ling``): one 零 for any run of zeros between spoken digits, inside a
  group or across groups (1005 一千零五, 100500 十万零五百, 100000001
  一亿零一); trailing zeros are silent (1000 一千); 0 alone is 零;
* 十: a number starting in the tens place drops the 一 (10 十, 15 十五,
  150000 十五万), elsewhere it is 一十 (110 一百一十, 10010 一万零一十);
* 两 (``liang``) instead of 二 before 千, 万 and 亿 (2000 两千, 20000 两万,
  200000000 两亿) and before 百 when it is the first word (200 两百, but
  1200 一千二百); 二 everywhere else (2, 12, 20, 22);
* 亿 is ``yi4`` (一 is ``yi``); negatives start with 负 (``fu``).

Chinese digits for phone numbers use ``yao`` (幺) for 1 when
``phone=True``.  Chinese dates: the year digit by digit, then 年, month 月,
day 日, weekday 星期一..六, 星期天 (2026-03-05 二零二六年三月五日星期四).

The builder (``python -m media.say build DIR [--language en zh]``) creates
the prompt sets with espeak-ng (voices ``en`` and ``cmn``), trimming the
leading and trailing silence of each word; :func:`ensure_prompt_set` builds
only missing words, so a cache directory is filled on demand and no audio is
committed to the repository.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import os
import pathlib
import sys
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import soundfile

from media.errors import LocalMediaError, PromptNotFoundError
from media.player import ArraySource, PromptCache, PromptSource, SilenceSource, load_prompt
from media.resample import TELEPHONY_RATE

__all__ = [
    "LANGUAGES",
    "VOCABULARY",
    "number_words",
    "digit_words",
    "date_words",
    "ordinal_words",
    "PromptSet",
    "build_prompt_set",
    "ensure_prompt_set",
]

LANGUAGES = ("en", "zh")
MAX_NUMBER = 999_999_999_999

# ---------------------------------------------------------------- English

_EN_UNITS = {str(i): w for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_EN_TENS = {str(10 * i): w for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_EN_ORDINALS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
_EN_MONTHS = "january february march april may june july august september october november december".split()
_EN_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_EN_SCALES = (("billion", 10**9), ("million", 10**6), ("thousand", 10**3))


def _en_below_100(n: int) -> list[str]:
    if n < 20:
        return [str(n)]
    tens, unit = divmod(n, 10)
    return [str(tens * 10)] + ([str(unit)] if unit else [])


def _en_below_1000(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    out = [str(hundreds), "hundred"] if hundreds else []
    if rest:
        out += _en_below_100(rest)
    return out


def _en_number(n: int) -> list[str]:
    if n == 0:
        return ["0"]
    out: list[str] = []
    for word, scale in _EN_SCALES:
        q, n = divmod(n, scale)
        if q:
            out += _en_below_1000(q) + [word]
    if n:
        out += _en_below_1000(n)
    return out


def _en_ordinal(n: int) -> list[str]:
    # 1..31 for dates: 21st = twenty first, 30th = thirtieth.
    if n <= 20:
        return [_EN_ORDINALS[n - 1]]
    if n == 30:
        return ["thirtieth"]
    tens, unit = divmod(n, 10)
    if unit == 0:
        raise LocalMediaError(f"no English ordinal prompt for {n}")
    return [str(tens * 10), _EN_ORDINALS[unit - 1]]


def _en_year(y: int) -> list[str]:
    if 2000 <= y <= 2009:
        return ["2", "thousand"] + ([str(y - 2000)] if y > 2000 else [])
    hi, lo = divmod(y, 100)
    if lo == 0:
        return _en_below_100(hi) + ["hundred"]
    if lo < 10:
        return _en_below_100(hi) + ["oh", str(lo)]
    return _en_below_100(hi) + _en_below_100(lo)


# ---------------------------------------------------------------- Chinese

_ZH_DIGITS = ("ling", "yi", "er", "san", "si", "wu", "liu", "qi", "ba", "jiu")
_ZH_POS_UNITS = ("qian", "bai", "shi", None)  # 千 百 十 个 (most significant first)
_ZH_GROUP_UNITS = ("yi4", "wan", None)  # 亿 万 (个)
_ZH_WEEKDAYS = ("yi", "er", "san", "si", "wu", "liu", "tian")


def _zh_number(n: int) -> list[str]:
    if n == 0:
        return ["ling"]
    groups = [(n // 10**8) % 10**4, (n // 10**4) % 10**4, n % 10**4]  # 亿, 万, 个
    out: list[str] = []
    pending_zero = False
    for g, group_unit in zip(groups, _ZH_GROUP_UNITS):
        digits = [g // 1000, g // 100 % 10, g // 10 % 10, g % 10]
        for d, pos_unit in zip(digits, _ZH_POS_UNITS):
            if d == 0:
                pending_zero = pending_zero or bool(out)
                continue
            if pending_zero:
                out.append("ling")
                pending_zero = False
            first = not out
            if pos_unit == "shi" and d == 1 and first:
                out.append("shi")  # 十五, 十万: no leading 一
                continue
            if d == 2 and (pos_unit == "qian" or (pos_unit == "bai" and first)
                           or (pos_unit is None and group_unit is not None and g == 2)):
                word = "liang"
            else:
                word = _ZH_DIGITS[d]
            out.append(word)
            if pos_unit:
                out.append(pos_unit)
        if g and group_unit:
            out.append(group_unit)
            # 两千万 / 两百万: a 2 before the group unit inside a larger group
            # was already handled by the position rules above.
    return out


# ---------------------------------------------------------------- public word functions


def _check_language(language: str) -> str:
    lang = language.lower()
    if lang.startswith("zh") or lang == "cmn":
        return "zh"
    if lang.startswith("en"):
        return "en"
    raise LocalMediaError(f"no number reading for language {language!r}; known: en, zh")


def number_words(n: int, language: str = "en") -> list[str]:
    """Word names that say the integer ``n`` (|n| ≤ 999,999,999,999).

    Raises:
        LocalMediaError: not an int, out of range, or unknown language.
    """
    lang = _check_language(language)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise LocalMediaError(f"number_words needs an int, got {type(n).__name__}")
    n = int(n)
    if abs(n) > MAX_NUMBER:
        raise LocalMediaError(f"{n} is beyond the {MAX_NUMBER:,} that prompt sets can say")
    if n < 0:
        return (["minus"] if lang == "en" else ["fu"]) + number_words(-n, lang)
    return _en_number(n) if lang == "en" else _zh_number(n)


def digit_words(digits: str, language: str = "en", phone: bool = False) -> list[str]:
    """Word names for a digit string, one digit at a time (``*``, ``#`` and
    separators are not spoken; use ``phone=True`` in Chinese for 幺).

    Raises:
        LocalMediaError: a character other than digits, spaces, ``-``, ``+``, ``(``, ``)``.
    """
    lang = _check_language(language)
    out = []
    for ch in digits:
        if ch.isdigit() and ch.isascii():
            if lang == "en":
                out.append(ch)
            else:
                out.append("yao" if phone and ch == "1" else _ZH_DIGITS[int(ch)])
        elif ch not in " -+()":
            raise LocalMediaError(f"cannot say {ch!r} in digit string {digits!r}")
    return out


def ordinal_words(n: int, language: str = "en") -> list[str]:
    """An ordinal day of month (1-31): English ``first`` .. ``thirty first``; Chinese ``五 日``."""
    lang = _check_language(language)
    if not 1 <= n <= 31:
        raise LocalMediaError(f"ordinal_words covers days 1-31, got {n}")
    return _en_ordinal(n) if lang == "en" else _zh_number(n) + ["ri"]


def date_words(date: datetime.date, language: str = "en", weekday: bool = True, year: bool = True) -> list[str]:
    """Word names for a date (see the module docstring for each language's order)."""
    lang = _check_language(language)
    if lang == "en":
        out = [_EN_WEEKDAYS[date.weekday()]] if weekday else []
        out += [_EN_MONTHS[date.month - 1]] + _en_ordinal(date.day)
        if year:
            out += _en_year(date.year)
        return out
    out = []
    if year:
        out += [_ZH_DIGITS[int(c)] for c in f"{date.year:04d}"] + ["nian"]
    out += _zh_number(date.month) + ["yue"] + _zh_number(date.day) + ["ri"]
    if weekday:
        out += ["xingqi", _ZH_WEEKDAYS[date.weekday()]]
    return out


# ---------------------------------------------------------------- vocabulary for the builder

#: language -> word name -> text espeak-ng speaks for it.
VOCABULARY: dict[str, dict[str, str]] = {
    "en": {
        **_EN_UNITS,
        **_EN_TENS,
        "hundred": "hundred", "thousand": "thousand", "million": "million", "billion": "billion",
        "minus": "minus", "oh": "oh",
        **{m: m.capitalize() for m in _EN_MONTHS},
        **{d: d.capitalize() for d in _EN_WEEKDAYS},
        **{o: o for o in _EN_ORDINALS}, "thirtieth": "thirtieth",
    },
    "zh": {
        "ling": "零", "yi": "一", "yao": "幺", "er": "二", "liang": "两", "san": "三", "si": "四",
        "wu": "五", "liu": "六", "qi": "七", "ba": "八", "jiu": "九", "shi": "十", "bai": "百",
        "qian": "千", "wan": "万", "yi4": "亿", "fu": "负", "nian": "年", "yue": "月", "ri": "日",
        "xingqi": "星期", "tian": "天",
    },
}
_VOICES = {"en": "en", "zh": "cmn"}


# ---------------------------------------------------------------- audio


class PromptSet:
    """The word prompts of one language under ``root/<language>/<word>.wav``."""

    def __init__(self, root: str | os.PathLike[str], language: str, gap_ms: float = 30.0,
                 cache: PromptCache | None = None) -> None:
        self.language = _check_language(language)
        self.directory = pathlib.Path(root) / self.language
        self.gap_ms = gap_ms
        self.cache = cache

    def path(self, word: str) -> pathlib.Path:
        """The file of ``word``.

        Raises:
            PromptNotFoundError: the file is missing (names word and path).
        """
        p = self.directory / f"{word}.wav"
        if not p.exists():
            raise PromptNotFoundError(f"prompt set {self.language!r} has no word {word!r} ({p})")
        return p

    def missing(self, words: Iterable[str]) -> list[str]:
        """Words of ``words`` without a file."""
        return [w for w in words if not (self.directory / f"{w}.wav").exists()]

    def sources(self, words: Sequence[str]) -> list:
        """Prompt sources for ``words`` with silent gaps between them, for a Playlist."""
        paths = [self.path(w) for w in words]  # fail before playing anything
        out: list = []
        for i, p in enumerate(paths):
            if i and self.gap_ms > 0:
                out.append(SilenceSource(self.gap_ms))
            out.append(PromptSource(p, self.cache))
        return out

    def assemble(self, words: Sequence[str]) -> npt.NDArray[np.int16]:
        """One int16 8 kHz array saying ``words`` (gaps included)."""
        gap = np.zeros(int(round(self.gap_ms * TELEPHONY_RATE / 1000)), np.int16)
        parts: list[np.ndarray] = []
        for i, w in enumerate(words):
            if i:
                parts.append(gap)
            parts.append(load_prompt(self.path(w), self.cache))
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def number(self, n: int) -> ArraySource:
        """A source saying ``n``."""
        return ArraySource(self.assemble(number_words(n, self.language)))

    def digits(self, digits: str, phone: bool = False) -> ArraySource:
        """A source saying a digit string."""
        return ArraySource(self.assemble(digit_words(digits, self.language, phone)))

    def date(self, date: datetime.date, weekday: bool = True, year: bool = True) -> ArraySource:
        """A source saying a date."""
        return ArraySource(self.assemble(date_words(date, self.language, weekday, year)))


def _trim(pcm: np.ndarray, threshold: float = 0.02, margin_ms: float = 10.0) -> np.ndarray:
    """Cut leading/trailing silence (below ``threshold`` of the peak), keeping a margin."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold * max(1, np.abs(pcm.astype(np.int32)).max()))
    if loud.size == 0:
        return pcm
    margin = int(margin_ms * TELEPHONY_RATE / 1000)
    return pcm[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def build_prompt_set(root: str | os.PathLike[str], language: str, force: bool = False,
                     tts: "object | None" = None, workers: int = 4,
                     words: Iterable[str] | None = None) -> list[str]:
    """Generate ``root/<language>/<word>.wav`` with espeak-ng.

    Args:
        words: only these words (default: the whole vocabulary).
        force: regenerate existing files (default: keep them).

    Returns:
        The words written.

    Raises:
        LocalMediaError: a word that is not in the language's vocabulary.
        TtsError: espeak-ng is missing or fails.
    """
    from media.tts import Tts

    lang = _check_language(language)
    out_dir = pathlib.Path(root) / lang
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = tts or Tts(pathlib.Path(root) / ".tts-cache")
    wanted = list(VOCABULARY[lang]) if words is None else list(dict.fromkeys(words))
    unknown = [w for w in wanted if w not in VOCABULARY[lang]]
    if unknown:
        raise LocalMediaError(f"words {unknown} are not in the {lang!r} prompt vocabulary")
    todo = [w for w in wanted if force or not (out_dir / f"{w}.wav").exists()]

    def make(word: str) -> str:
        wav = engine.synthesize(VOCABULARY[lang][word], voice=_VOICES[lang])
        pcm, _ = soundfile.read(str(wav), dtype="int16")
        staged = out_dir / f".{word}.tmp.wav"
        soundfile.write(str(staged), _trim(pcm), TELEPHONY_RATE, subtype="PCM_16")
        os.replace(staged, out_dir / f"{word}.wav")
        return word

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(make, todo))


def ensure_prompt_set(root: str | os.PathLike[str], language: str, tts: "object | None" = None) -> PromptSet:
    """A :class:`PromptSet` under ``root``, building any missing word first."""
    build_prompt_set(root, language, force=False, tts=tts)
    return PromptSet(root, language)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m media.say", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="generate prompt sets with espeak-ng")
    build.add_argument("directory")
    build.add_argument("--language", nargs="+", default=list(LANGUAGES), choices=LANGUAGES)
    build.add_argument("--force", action="store_true", help="regenerate existing words")
    say = sub.add_parser("words", help="print the words for a number, digit string or ISO date")
    say.add_argument("value")
    say.add_argument("--language", default="en", choices=LANGUAGES)
    args = parser.parse_args(argv)
    if args.command == "build":
        for lang in args.language:
            written = build_prompt_set(args.directory, lang, force=args.force)
            print(f"{lang}: {len(written)} words written, {len(VOCABULARY[lang])} in the set")
        return 0
    value = args.value
    if "-" in value[1:]:
        words = date_words(datetime.date.fromisoformat(value), args.language)
    else:
        words = number_words(int(value), args.language)
    print(" ".join(words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
