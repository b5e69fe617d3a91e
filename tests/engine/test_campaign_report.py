"""engine/campaign_report.py: per-interval figures from campaign_log rows (pure)."""
from __future__ import annotations

from engine.campaign_report import campaign_report, report_csv


def row(ts: float, event: str, outcome: str = "", **kw: object) -> dict[str, object]:
    return {"ts": ts, "event": event, "outcome": outcome, **kw}


def test_notification_confirmations_counted_per_interval() -> None:
    rows = [row(1, "attempt"), row(2, "result", "answered"), row(5, "confirmed", "confirmed"), row(6, "ended"),
            row(3, "attempt"), row(4, "result", "answered"), row(12, "not_confirmed", "not_confirmed"),
            row(12, "ended"), row(13, "attempt"), row(14, "result", "busy", data='{"sip_status": 486}')]
    first, second = campaign_report(rows, from_ts=0, to_ts=20, interval_s=10)
    assert (first["attempts"], first["answered"], first["confirmed"], first["not_confirmed"]) == (2, 2, 1, 0)
    assert (second["attempts"], second["confirmed"], second["not_confirmed"]) == (1, 0, 1)
    assert second["outcomes"] == {"busy": 1} and first["connects"] == 0 and first["drop_rate"] == 0.0
    header, line1, line2 = report_csv([first, second]).splitlines()
    assert ",dispositions,confirmed,not_confirmed,agent_logged_in_s," in header
    assert ",1,0,,,,,,," in line1 and ",0,1,,,,,,," in line2   # no agent figures merged: empty cells
