"""Fixtures for the engine's foundation tests (helpers in foundation_helpers.py)."""
from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import Any, Callable

import pytest

from engine.config import Config, parse_config
from foundation_helpers import config_text


@pytest.fixture
def sock_dir() -> Any:
    # AF_UNIX paths are limited to 107 bytes: keep the directory short.
    d = tempfile.mkdtemp(prefix="cti")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_config(sock_dir: str, tmp_path: pathlib.Path) -> Callable[..., Config]:
    """``make_config(extra_toml)`` → a validated Config written to tmp_path/engine.toml."""
    def make(extra: str = "") -> Config:
        text = config_text(sock_dir, str(tmp_path / "store.db"), extra)
        path = tmp_path / "engine.toml"
        path.write_text(text)
        return parse_config(text, str(path))
    return make
