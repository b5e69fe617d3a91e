"""The build contract: every .pyx is compiled (unless the twins are forced) and
has a pure-Python twin beside it exposing the same public names."""
from __future__ import annotations

import importlib
import pathlib

import pytest

from engine.purepython import pure_python_forced

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYX = sorted(p for pkg in ("sip", "media", "ivr", "engine") for p in (ROOT / pkg).glob("_*.pyx"))


def test_packages_import() -> None:
    for pkg in ("sip", "media", "ivr", "engine"):
        importlib.import_module(pkg)


@pytest.mark.parametrize("pyx", PYX, ids=[p.stem for p in PYX])
def test_extension_built_and_twinned(pyx: pathlib.Path) -> None:
    pkg = pyx.parent.name
    twin = pyx.with_name(pyx.stem[1:] + ".py")
    assert twin.exists(), f"{pyx.relative_to(ROOT)} has no pure-Python twin {twin.name}"
    if pure_python_forced():
        pytest.skip("CTIENGINE_PUREPYTHON=1: compiled modules not required")
    mod = importlib.import_module(f"{pkg}.{pyx.stem}")
    assert not mod.__file__.endswith(".py"), f"{pkg}.{pyx.stem} is not compiled"
