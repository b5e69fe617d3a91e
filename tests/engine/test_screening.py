"""Screening decisions, run-time entries and their replay from the store (engine/screening.py)."""
from __future__ import annotations

import datetime as dt
import pathlib
from zoneinfo import ZoneInfo

import pytest

from engine.config import StoreSection, parse_config
from engine.errors import Conflict, InvalidArgs, NotFound
from engine.screening import Screening
from engine.store import open_store

CONFIG = """
[engine]
time_zone = "Europe/Berlin"

[tenants.other]

[screening.spam]
numbers = ["+4917000001", "+49900*"]
reject_status = 486
reject_reason = "Go Away"

[screening.vip]
kind = "exempt"
numbers = ["+4990077"]

[screening.night]
kind = "allow"
numbers = ["+4917055*"]
dialed_numbers = ["+4930555100"]
windows = [{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "20:00", end = "24:00" }]
action = "message"
message = "Sorry, this line only takes calls from registered customers at night."

[screening.other_tenant]
tenant = "other"
numbers = ["*"]
"""


def at(day: int, hour: int, minute: int = 0) -> float:
    """Unix time of 2026-11-<day> HH:MM in Berlin (23rd = Monday)."""
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


@pytest.fixture()
def screening() -> Screening:
    return Screening(parse_config(CONFIG))


def test_block_list_by_number_and_prefix(screening: Screening) -> None:
    noon = at(23, 12)
    v = screening.check("default", "+4917000001", "+4930555100", noon)
    assert v is not None and (v.list, v.kind, v.pattern, v.action, v.status, v.reason) == \
        ("spam", "block", "+4917000001", "reject", 486, "Go Away")
    v = screening.check("default", "+4990012345", "+4930555100", noon)
    assert v is not None and v.pattern == "+49900*"
    assert screening.check("default", "+4917000002", "+4930555100", noon) is None


def test_allow_list_wins_over_block_prefix(screening: Screening) -> None:
    assert screening.check("default", "+4990077", "+4930555100", at(23, 12)) is None


def test_whitelist_only_window(screening: Screening) -> None:
    evening, noon = at(24, 21, 30), at(24, 12)
    v = screening.check("default", "+4917000002", "+4930555100", evening)
    assert v is not None and (v.list, v.kind, v.pattern, v.action) == ("night", "allow", "", "message")
    assert v.reason == "Decline" and v.status == 603
    assert screening.check("default", "+4917055123", "+4930555100", evening) is None  # on the allow list
    assert screening.check("default", "+4917000002", "+4930555100", noon) is None  # window closed
    assert screening.check("default", "+4917000002", "+4930555999", evening) is None  # other dialed number
    assert screening.check("default", "+4917000002", "+4930555100", at(24, 20, 0)) is not None  # start inclusive


def test_lists_are_tenant_scoped(screening: Screening) -> None:
    assert screening.check("default", "+4911111", "+49305", at(23, 12)) is None
    v = screening.check("other", "+4911111", "+49305", at(23, 12))
    assert v is not None and v.list == "other_tenant" and v.pattern == "*"


def test_runtime_entries_validate_and_persist(tmp_path: pathlib.Path) -> None:
    cfg = parse_config(CONFIG)
    store = open_store(StoreSection(batch_interval_ms=5), str(tmp_path / "s.db"))
    try:
        s = Screening(cfg, store)
        entry = s.add("spam", "+4915*", user="sup", note="robocalls", ts=100.0)
        assert entry == {"number": "+4915*", "source": "runtime", "ts": 100.0, "user": "sup", "note": "robocalls"}
        s.add("spam", "+4916000", user="sup")
        with pytest.raises(Conflict):
            s.add("spam", "+4915*")
        with pytest.raises(Conflict):
            s.add("spam", "+4917000001")  # configured
        with pytest.raises(InvalidArgs, match="not a dialed-number pattern"):
            s.add("spam", "12a")
        with pytest.raises(NotFound):
            s.add("nope", "123")
        v = s.check("default", "+49151234", "+4930555100", at(23, 12))
        assert v is not None and v.pattern == "+4915*"
        assert s.listed("default", "+49151234", at(23, 12)) == ["spam"]
        s.remove("spam", "+4916000", user="sup", note="paid")
        with pytest.raises(NotFound):
            s.remove("spam", "+4916000")
        with pytest.raises(Conflict, match="edit the config file"):
            s.remove("spam", "+4917000001")
        store.flush()
        again = Screening(cfg, store)
        assert again.load() == 1
        assert again.describe("spam")["entries"] == [
            {"number": "+4917000001", "source": "config"}, {"number": "+49900*", "source": "config"},
            {"number": "+4915*", "source": "runtime", "ts": 100.0, "user": "sup", "note": "robocalls"}]
        rows = store.select("screening_log")
        assert [(r["action"], r["number"], r["note"]) for r in rows] == [
            ("add", "+4915*", "robocalls"), ("add", "+4916000", ""), ("remove", "+4916000", "paid")]
    finally:
        store.close()


def test_callpath_md_screening_example() -> None:
    """The [screening.*] example of docs/callpath.md loads and behaves as the page says."""
    import re

    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "callpath.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[screening." in b]
    s = Screening(parse_config(block))
    assert s.check("default", "+4990012", "+4930555100", at(23, 12)).status == 603
    friday_night, monday_noon = at(27, 21), at(23, 12)
    v = s.check("default", "+4917000002", "+4930555100", friday_night)
    assert v is not None and (v.list, v.action) == ("night_line", "message")
    assert s.check("default", "+4917055001", "+4930555100", friday_night) is None
    assert s.check("default", "+4917000002", "+4930555100", monday_noon) is None


def test_block_lists_are_the_campaigns_do_not_call_hook(screening: Screening) -> None:
    """The engine appends this hook to CampaignService.screen_hooks when a call path runs."""
    from engine.campaign_service import screening_block_hook

    hook = screening_block_hook(lambda: screening)
    assert hook("default", "sales", "+4990012345") == "screening:spam"
    assert hook("default", "sales", "+4930999999") is None  # tenant other's "*" list does not apply here
    assert hook("other", "sales", "+4930999999") == "screening:other_tenant"
    assert screening_block_hook(lambda: None)("default", "sales", "+4990012345") is None
