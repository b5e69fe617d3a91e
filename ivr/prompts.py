"""Prompts: what a flow may ask to play, and how names become files per language.

A prompt in a flow is either a **name** (``"welcome"``, ``"menus/sales"``)
resolved to a file ``<prompt_dir>/<language>/<name>.<ext>`` for the caller's
current language (falling back to the flow's ``fallback_language``), or an
inline table with exactly one key:

* ``{ tts = "text with {variables}" }``: synthesised in the caller's language,
* ``{ say_digits = "{account}" }``: the value read digit by digit,
* ``{ say_number = "{balance}" }``: the value read as a number,
* ``{ say_date = "{due_date}" }``: a ``YYYY-MM-DD`` value read as a date,
* ``{ file = "welcome" }``: the long form of a name.

The catalogue of existing files is built once when the flow loads (the
interpreter does no IO); the validator reports a name missing in the
fallback language as an error and missing in another listed language as a
warning (callers of that language hear the fallback).
"""
from __future__ import annotations

import datetime as dt
import pathlib
from dataclasses import dataclass
from typing import Any, Mapping

from ivr.actions import PromptItem
from ivr.expr import render

AUDIO_EXTENSIONS = (".wav", ".ulaw", ".alaw", ".flac", ".ogg", ".mp3")
SAY_KINDS = {"say_digits": "digits", "say_number": "number", "say_date": "date"}
SPEC_KEYS = ("file", "tts", *SAY_KINDS)

_MONTHS = {
    "en": ("January February March April May June July August September October November December"),
    "fr": ("janvier février mars avril mai juin juillet août septembre octobre novembre décembre"),
    "de": ("Januar Februar März April Mai Juni Juli August September Oktober November Dezember"),
    "es": ("enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre"),
}


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt as written in the flow: ``kind`` file/tts/digits/number/date."""

    kind: str
    value: str


def parse_prompt(raw: Any) -> PromptSpec:
    """Turn one TOML prompt value into a spec; raises ``ValueError``."""
    if isinstance(raw, str):
        if not raw.strip():
            raise ValueError("empty prompt name")
        return PromptSpec("file", raw)
    if isinstance(raw, dict):
        keys = [k for k in raw if k in SPEC_KEYS]
        unknown = [k for k in raw if k not in SPEC_KEYS]
        if unknown:
            raise ValueError(f"unknown prompt key {unknown[0]!r} (use one of {', '.join(SPEC_KEYS)})")
        if len(keys) != 1:
            raise ValueError(f"a prompt table needs exactly one of {', '.join(SPEC_KEYS)}")
        key = keys[0]
        value = raw[key]
        if not isinstance(value, str | int):
            raise ValueError(f"prompt {key} must be a string")
        return PromptSpec("file" if key == "file" else "tts" if key == "tts" else SAY_KINDS[key], str(value))
    raise ValueError(f"a prompt is a name or a table such as {{tts = \"...\"}}, not {type(raw).__name__}")


def parse_prompts(raw: Any) -> tuple[PromptSpec, ...]:
    """A single prompt or a list of prompts; raises ``ValueError``."""
    if isinstance(raw, list):
        return tuple(parse_prompt(item) for item in raw)
    return (parse_prompt(raw),)


def say_text(kind: str, value: str, language: str) -> str:
    """Words a TTS engine should say for a ``say_*`` prompt."""
    if kind == "digits":
        return " ".join(ch for ch in value if not ch.isspace())
    if kind == "number":
        return value.strip()
    if kind == "date":
        try:
            day = dt.date.fromisoformat(value.strip())
        except ValueError:
            return value
        months = _MONTHS.get(language.split("-")[0])
        if months is None:
            return day.isoformat()
        month = months.split()[day.month - 1]
        if language.startswith("en"):
            return f"{month} {day.day}, {day.year}"
        if language.startswith("de"):
            return f"{day.day}. {month} {day.year}"
        if language.startswith("es"):
            return f"{day.day} de {month} de {day.year}"
        return f"{day.day} {month} {day.year}"
    return value


class PromptCatalog:
    """Existing prompt files per language, scanned once at load time."""

    def __init__(self, root: pathlib.Path | None, fallback_language: str) -> None:
        self.root = root
        self.fallback_language = fallback_language
        self._files: dict[tuple[str, str], pathlib.Path] = {}
        if root is not None and root.is_dir():
            for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                for path in sorted(lang_dir.rglob("*")):
                    if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                        name = path.relative_to(lang_dir).with_suffix("").as_posix()
                        self._files.setdefault((lang_dir.name, name), path.resolve())

    def find(self, name: str, language: str) -> pathlib.Path | None:
        """The file for ``name`` in exactly ``language``, or None."""
        return self._files.get((language, name))

    def resolve(self, name: str, language: str) -> tuple[pathlib.Path, str] | None:
        """The file for ``name`` in ``language`` or else the fallback language."""
        path = self._files.get((language, name))
        if path is not None:
            return path, language
        path = self._files.get((self.fallback_language, name))
        if path is not None:
            return path, self.fallback_language
        return None

    def languages(self) -> set[str]:
        return {lang for lang, _ in self._files}


def resolve_items(specs: tuple[PromptSpec, ...], catalog: PromptCatalog, language: str,
                  variables: Mapping[str, Any]) -> tuple[tuple[PromptItem, ...], list[str]]:
    """Resolve specs for one caller; returns items and the names not found.

    A name with no file in the language nor the fallback is skipped (and
    reported so the interpreter logs a warning) rather than failing the call.
    """
    items: list[PromptItem] = []
    missing: list[str] = []
    for spec in specs:
        if spec.kind == "file":
            found = catalog.resolve(spec.value, language)
            if found is None:
                missing.append(spec.value)
                continue
            items.append(PromptItem("file", str(found[0]), found[1]))
        elif spec.kind == "tts":
            text = render(spec.value, variables)
            items.append(PromptItem("tts", text, language, text))
        else:
            value = render(spec.value, variables)
            items.append(PromptItem(spec.kind, value, language, say_text(spec.kind, value, language)))
    return tuple(items), missing
