"""docs/outbound.md: its TOML examples are valid campaign definitions (on top of the config.md example)."""
from __future__ import annotations

import pathlib
import re

from engine.config import parse_config

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def toml_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)


def test_outbound_md_campaign_examples_parse() -> None:
    (base,) = toml_blocks(DOCS / "config.md")
    examples = toml_blocks(DOCS / "outbound.md")
    trunk = '\n[trunks.carrier]\nhost = "127.0.0.1"\nport = 5099\n'  # the examples' trunk
    cfg = parse_config(base + trunk + "\n".join(examples), "docs/outbound.md")
    parcel = cfg.campaigns["parcel"]
    assert parcel.mode == "notification" and parcel.confirm_digit == "1" and parcel.confirm_timeout_s == 5.0
    assert "{name}" in parcel.message and parcel.max_channels == 20
    assert cfg.campaigns["winter"].mode == "predictive"
