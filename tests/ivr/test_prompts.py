"""Prompt specs, say rendering and per-language resolution."""
from __future__ import annotations

import pytest

from ivr.actions import PromptItem
from ivr.prompts import PromptCatalog, PromptSpec, parse_prompt, parse_prompts, resolve_items, say_text
from ivr_helpers import write_wav


def test_parse_prompt_forms():
    assert parse_prompts("hello") == (PromptSpec("file", "hello"),)
    assert parse_prompts(["a", {"tts": "x"}, {"say_digits": 12}, {"file": "b"}]) == (
        PromptSpec("file", "a"), PromptSpec("tts", "x"), PromptSpec("digits", "12"), PromptSpec("file", "b"))
    for bad, message in [({"tts": "a", "file": "b"}, "exactly one of"), ({"speak": "x"}, "unknown prompt key 'speak'"),
                         ("", "empty prompt name"), (3, "not int"), ({"tts": ["x"]}, "must be a string")]:
        with pytest.raises(ValueError, match=message):
            parse_prompt(bad)


@pytest.mark.parametrize("kind, value, language, text", [
    ("digits", "12 34", "en", "1 2 3 4"),
    ("number", " 42 ", "fr", "42"),
    ("date", "2026-07-14", "en", "July 14, 2026"),
    ("date", "2026-07-14", "fr", "14 juillet 2026"),
    ("date", "2026-07-14", "de", "14. Juli 2026"),
    ("date", "2026-07-14", "es", "14 de julio de 2026"),
    ("date", "2026-07-14", "ja", "2026-07-14"),
    ("date", "soon", "en", "soon"),
])
def test_say_text(kind, value, language, text):
    assert say_text(kind, value, language) == text


def test_catalog_resolution_with_fallback(tmp_path):
    write_wav(tmp_path / "en" / "menus" / "main.wav")
    write_wav(tmp_path / "fr" / "menus" / "main.wav")
    write_wav(tmp_path / "en" / "only_en.wav")
    (tmp_path / "en" / "notes.txt").write_text("not audio")
    catalog = PromptCatalog(tmp_path, "en")
    assert catalog.languages() == {"en", "fr"}
    assert catalog.resolve("menus/main", "fr") == ((tmp_path / "fr" / "menus" / "main.wav").resolve(), "fr")
    assert catalog.resolve("only_en", "fr")[1] == "en"
    assert catalog.resolve("notes", "en") is None
    items, missing = resolve_items((PromptSpec("file", "only_en"), PromptSpec("file", "ghost"),
                                    PromptSpec("tts", "Hi {n}")), catalog, "fr", {"n": "Jo"})
    assert missing == ["ghost"]
    assert items[1] == PromptItem("tts", "Hi Jo", "fr", "Hi Jo")
