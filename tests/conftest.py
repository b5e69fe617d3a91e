"""Suite-wide fixtures.  ``SHARED`` is the third-party test material beside the
checkout (read in place, never copied)."""
from __future__ import annotations

import os
import pathlib
import socket

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0 and release)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def shared_dir() -> pathlib.Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found beside the checkout at {SHARED}")
    return SHARED


@pytest.fixture
def pure_python() -> bool:
    return os.environ.get("CTIENGINE_PUREPYTHON", "") not in ("", "0")
