"""Outbound campaigns: number lists, calling hours, retries and do-not-call, sans-IO.

Theory of operation
-------------------
A campaign (``[campaigns.NAME]`` in the config, or ``campaign.create`` at
run time; both are :class:`engine.config.Campaign`) owns a list of
:class:`CallRecord` s: a number to call, the callee's time zone and the
custom fields of its CSV row (shown on the agent's screen pop).
:class:`CampaignBook` is the whole life of one campaign without any IO:

* :meth:`CampaignBook.import_csv` parses a CSV text (a ``number`` column,
  optional ``id``, ``time_zone`` columns, every other column a custom field),
  normalises numbers, rejects bad and duplicate rows with the line number.
* :meth:`CampaignBook.due` lists the records that may be dialled at ``now``:
  the campaign is running, the record is waiting (never tried, or its retry
  time has come), ``now`` falls inside the calling hours *in the callee's
  local time* (per record zone, else the longest ``prefix_time_zones``
  match, else the campaign's, else the engine's zone; :mod:`zoneinfo`, so
  DST moves the window with the callee) and the number passes the
  do-not-call screen (:class:`DncList` plus any hook given).  A blocked
  number is finished at once with outcome ``blocked``.
* :meth:`CampaignBook.begin_attempt` is called *before* the INVITE leaves;
  it returns the ``attempt`` log row that the dialer writes and flushes
  first.  :meth:`CampaignBook.finish_attempt` records the call's outcome
  and schedules the retry from the campaign's per-outcome rules
  (``retries``: outcome, ``delay_s``, ``max_attempts``) or finishes the
  record.  :meth:`CampaignBook.disposition` stores the agent's disposition
  and an optional callback time (the record comes due again then, even
  when its attempts are used up).
* Persistence is an append-only log (tables ``campaigns``,
  ``campaign_records``, ``campaign_log``; migration 4): every method returns
  the rows to append, and :meth:`CampaignBook.replay` rebuilds the state
  from them.  An ``attempt`` row without a ``result`` row means the engine
  stopped mid-call: on replay that attempt counts, ends as ``interrupted``
  and is *not* retried (the callee may have been reached), so a restart
  never dials anyone twice.

Campaign states are an enum with a transition table (STYLE.md §2):
``created → running ⇄ paused``, ``running|paused → stopped``,
``running → completed`` when no record can come due any more, and
``stopped|completed → running`` (restart, e.g. after an import), and
``created|stopped|completed → deleted`` (``campaign.delete``: a soft
delete, the records and the log stay for reports; nothing leaves
``deleted``).  :meth:`CampaignBook.reconfigure` swaps in an edited
definition (``campaign.update``); which keys may change in which state is
decided by :mod:`engine.campaign_edit`.
The module reads no clock: ``now`` (Unix seconds) is passed in.
"""
from __future__ import annotations

import csv
import datetime
import enum
import io
import json
import logging
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from engine.config import CAMPAIGN_OUTCOMES, Campaign, CampaignRetry, TimeRule
from engine.errors import Conflict, InvalidArgs

logger = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NUMBER_RE = re.compile(r"\+?[0-9]{3,20}")
_NUMBER_JUNK = re.compile(r"[\s\-().\u00a0/]")
RESERVED_COLUMNS = ("number", "id", "time_zone")
MAX_FIELD_CHARS = 1000


class CampaignState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    DELETED = "deleted"


class CampaignTrigger(enum.Enum):
    START = "start"
    PAUSE = "pause"
    STOP = "stop"
    COMPLETE = "complete"
    DELETE = "delete"


CAMPAIGN_TRANSITIONS: dict[CampaignState, dict[CampaignTrigger, CampaignState]] = {
    CampaignState.CREATED: {CampaignTrigger.START: CampaignState.RUNNING,
                            CampaignTrigger.STOP: CampaignState.STOPPED,
                            CampaignTrigger.DELETE: CampaignState.DELETED},
    CampaignState.RUNNING: {CampaignTrigger.PAUSE: CampaignState.PAUSED,
                            CampaignTrigger.STOP: CampaignState.STOPPED,
                            CampaignTrigger.COMPLETE: CampaignState.COMPLETED},
    CampaignState.PAUSED: {CampaignTrigger.START: CampaignState.RUNNING,
                           CampaignTrigger.STOP: CampaignState.STOPPED},
    CampaignState.STOPPED: {CampaignTrigger.START: CampaignState.RUNNING,
                            CampaignTrigger.DELETE: CampaignState.DELETED},
    CampaignState.COMPLETED: {CampaignTrigger.START: CampaignState.RUNNING,
                              CampaignTrigger.DELETE: CampaignState.DELETED},
    CampaignState.DELETED: {},
}


class RecordState(enum.Enum):
    WAITING = "waiting"        # never tried, or a retry/callback is scheduled
    DIALING = "dialing"        # an attempt is in progress
    DONE = "done"              # reached (answered by a person, or the agent disposed it)
    FAILED = "failed"          # attempts used up, or an outcome without a retry rule
    BLOCKED = "blocked"        # do-not-call / blacklist
    SKIPPED = "skipped"        # preview: the agent skipped it


# Outcomes of one attempt.  CAMPAIGN_OUTCOMES (config) are the retryable ones.
ANSWERED = "answered"
INTERRUPTED = "interrupted"
OUTCOMES = (ANSWERED, INTERRUPTED) + CAMPAIGN_OUTCOMES


class CampaignError(InvalidArgs):
    """A bad campaign input (CSV, definition, record id); the message names it."""


@dataclass(slots=True)
class CallRecord:
    """One number of a campaign and its progress."""

    record_id: str
    number: str
    time_zone: str
    fields: dict[str, str]
    state: RecordState = RecordState.WAITING
    attempts: int = 0
    next_ts: float = 0.0
    last_outcome: str = ""
    call_id: str = ""
    disposition: str = ""
    callback_agent: str = ""

    def describe(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "number": self.number, "time_zone": self.time_zone,
                "fields": dict(self.fields), "state": self.state.value, "attempts": self.attempts,
                "next_ts": self.next_ts, "last_outcome": self.last_outcome, "disposition": self.disposition,
                "callback_agent": self.callback_agent}


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`CampaignBook.import_csv` did: rows to persist and rejected lines."""

    rows: list[dict[str, Any]]
    imported: int
    rejected: list[tuple[int, str]]  # (CSV line, reason)


def normalise_number(text: str) -> str:
    """``text`` without spaces, dashes, dots, slashes and brackets; ``CampaignError`` unless a number."""
    clean = _NUMBER_JUNK.sub("", text or "")
    if clean.startswith("00"):
        clean = "+" + clean[2:]
    if not NUMBER_RE.fullmatch(clean):
        raise CampaignError(f"not a phone number {text!r} (3 to 20 digits, optional leading '+')")
    return clean


def zone_for(number: str, record_zone: str, prefix_zones: dict[str, str], default_zone: str) -> str:
    """The callee's IANA zone: the record's, else the longest matching prefix's, else ``default_zone``."""
    if record_zone:
        return record_zone
    best = ""
    for prefix in prefix_zones:
        p = prefix.rstrip("*")
        if number.startswith(p) and len(p) > len(best.rstrip("*")):
            best = prefix
    return prefix_zones[best] if best else default_zone


def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name or "UTC")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def in_calling_hours(now: float, zone: str, rules: tuple[TimeRule, ...], holidays: tuple[str, ...] = ()) -> bool:
    """True when ``now`` is inside one of ``rules`` in the local time of ``zone`` (no rules: always)."""
    local = datetime.datetime.fromtimestamp(now, _zone(zone))
    if local.date().isoformat() in holidays:
        return False
    if not rules:
        return True
    day = DAYS[local.weekday()]
    minute = local.hour * 60 + local.minute
    return any(day in r.days and _minutes(r.start) <= minute < _minutes(r.end) for r in rules)


def next_window_start(now: float, zone: str, rules: tuple[TimeRule, ...],
                      holidays: tuple[str, ...] = ()) -> float | None:
    """The first time at or after ``now`` inside the calling hours (``None``: never within 15 days)."""
    if in_calling_hours(now, zone, rules, holidays):
        return now
    tz = _zone(zone)
    today = datetime.datetime.fromtimestamp(now, tz).date()
    best: float | None = None
    for offset in range(16):
        day = today + datetime.timedelta(days=offset)
        if day.isoformat() in holidays:
            continue
        for r in rules or (TimeRule(days=DAYS, start="00:00", end="24:00"),):
            if DAYS[day.weekday()] not in r.days:
                continue
            start = _minutes(r.start)
            # A wall-clock time in a DST gap does not exist; zoneinfo maps it
            # forward (fold=0), which is the first dialable moment anyway.
            local = datetime.datetime.combine(day, datetime.time(start // 60, start % 60), tz)
            ts = local.timestamp()
            if ts >= now and (best is None or ts < best):
                best = ts
        if best is not None:
            return best
    return None


class DncList:
    """A do-not-call / blacklist screen: exact numbers and prefixes (``+1900*``), per tenant.

    Rebuilt from ``dnc`` rows (``action`` ``add``/``remove``) with
    :meth:`apply_rows`; a ``campaign`` column limits an entry to one campaign.
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str, str], str] = {}   # (tenant, campaign, number) -> reason
        self._prefix: dict[tuple[str, str, str], str] = {}

    def add(self, tenant: str, number: str, campaign: str = "", reason: str = "dnc") -> None:
        table, key = self._key(tenant, number, campaign)
        table[key] = reason or "dnc"

    def remove(self, tenant: str, number: str, campaign: str = "") -> None:
        table, key = self._key(tenant, number, campaign)
        table.pop(key, None)

    def _key(self, tenant: str, number: str, campaign: str) -> tuple[dict[tuple[str, str, str], str],
                                                                      tuple[str, str, str]]:
        if number.endswith("*"):
            return self._prefix, (tenant, campaign, number[:-1])
        return self._exact, (tenant, campaign, normalise_number(number))

    def apply_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            if r.get("action", "add") == "remove":
                self.remove(r["tenant"], r["number"], r.get("campaign", ""))
            else:
                self.add(r["tenant"], r["number"], r.get("campaign", ""), r.get("reason", "") or "dnc")

    def check(self, tenant: str, campaign: str, number: str) -> str | None:
        """The reason ``number`` may not be called in ``campaign`` of ``tenant``, or ``None``."""
        for scope in ("", campaign):
            reason = self._exact.get((tenant, scope, number))
            if reason:
                return reason
            for (t, c, prefix), reason in self._prefix.items():
                if t == tenant and c == scope and number.startswith(prefix):
                    return reason
        return None

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefix)


ScreenHook = Callable[[str, str, str], "str | None"]  # (tenant, campaign, number) -> reason or None


class CampaignBook:
    """Records and progress of one campaign; every mutator returns the log rows to append."""

    def __init__(self, campaign: Campaign, *, default_zone: str = "UTC") -> None:
        self.campaign = campaign
        self.default_zone = campaign.time_zone or default_zone
        self.state = CampaignState.CREATED
        self.records: dict[str, CallRecord] = {}
        self._by_number: dict[str, str] = {}
        self._by_call: dict[str, str] = {}
        # Dialling order (import order; a revived callback goes to the end).  Holds the
        # records that may still come due plus finished ones until the next compaction,
        # so a tick costs O(records still in play), not O(every record ever imported).
        self._order: list[str] = []
        self._in_order: set[str] = set()
        self._finished_since_compaction = 0
        self.rules: dict[str, CampaignRetry] = {r.outcome: r for r in campaign.retries}

    # ------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self.campaign.name

    @property
    def tenant(self) -> str:
        return self.campaign.tenant

    def log_row(self, now: float, event: str, rec: CallRecord | None = None, **kw: Any) -> dict[str, Any]:
        """A ``campaign_log`` row of this campaign (about ``rec`` when given)."""
        row: dict[str, Any] = {"tenant": self.tenant, "campaign": self.name, "ts": now, "event": event}
        if rec is not None:
            row.update(record_id=rec.record_id, number=rec.number, attempt=rec.attempts)
        row.update(kw)
        return row

    # ------------------------------------------------------------ state

    def transition(self, trigger: CampaignTrigger, now: float, user: str = "") -> dict[str, Any]:
        """Apply ``trigger``; returns the ``campaigns`` row.  ``Conflict`` when illegal here."""
        target = CAMPAIGN_TRANSITIONS[self.state].get(trigger)
        if target is None:
            raise Conflict(f"campaign {self.name!r} is {self.state.value}: cannot {trigger.value}")
        self.state = target
        return {"tenant": self.tenant, "name": self.name, "ts": now, "state": target.value, "user": user}

    def reconfigure(self, campaign: Campaign) -> None:
        """Use the edited definition ``campaign`` (same name and tenant) from now on.

        Retry rules and attempt limits apply to the *next* outcome of each
        record; retries already scheduled keep their time.  Record zones
        were fixed at import, so the zone keys are not editable
        (:mod:`engine.campaign_edit`).
        """
        if (campaign.tenant, campaign.name) != (self.tenant, self.name):
            raise CampaignError(f"cannot reconfigure campaign {self.name!r} with campaign {campaign.name!r}")
        self.campaign = campaign
        self.rules = {r.outcome: r for r in campaign.retries}

    # ------------------------------------------------------------ import

    def import_csv(self, text: str, now: float, batch: str = "") -> ImportResult:
        """Add the rows of CSV ``text`` (header line first, a ``number`` column required).

        Returns the ``campaign_records`` rows to persist and the rejected lines.
        Raises :class:`CampaignError` when the header has no ``number`` column.
        """
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "number" not in header:
            raise CampaignError(f"CSV header {header!r} has no 'number' column")
        reader.fieldnames = header
        rows: list[dict[str, Any]] = []
        rejected: list[tuple[int, str]] = []
        for raw in reader:
            line = reader.line_num
            try:
                rec = self._record_from_row(raw, line)
            except CampaignError as exc:
                rejected.append((line, str(exc)))
                continue
            self._add(rec)
            rows.append({"tenant": self.tenant, "campaign": self.name, "record_id": rec.record_id,
                         "number": rec.number, "time_zone": rec.time_zone, "fields": rec.fields,
                         "import_ts": now, "batch": batch})
        return ImportResult(rows=rows, imported=len(rows), rejected=rejected)

    def _record_from_row(self, raw: dict[str | None, Any], line: int) -> CallRecord:
        if None in raw:
            raise CampaignError(f"line {line}: more values than header columns")
        number = normalise_number((raw.get("number") or "").strip())
        rid = (raw.get("id") or "").strip() or f"r{len(self.records) + 1}"
        if rid in self.records:
            raise CampaignError(f"line {line}: duplicate record id {rid!r}")
        if number in self._by_number:
            raise CampaignError(f"line {line}: duplicate number {number} (record {self._by_number[number]!r})")
        tz = (raw.get("time_zone") or "").strip()
        if tz:
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise CampaignError(f"line {line}: unknown time zone {tz!r}") from None
        fields = {k: (v or "").strip()[:MAX_FIELD_CHARS] for k, v in raw.items()
                  if k is not None and k not in RESERVED_COLUMNS}
        zone = zone_for(number, tz, self.campaign.prefix_time_zones, self.default_zone)
        return CallRecord(record_id=rid, number=number, time_zone=zone, fields=fields)

    def _add(self, rec: CallRecord) -> None:
        self.records[rec.record_id] = rec
        self._by_number[rec.number] = rec.record_id
        self._enlist(rec.record_id)

    def _enlist(self, record_id: str) -> None:
        if record_id not in self._in_order:
            self._order.append(record_id)
            self._in_order.add(record_id)

    def _compact(self) -> None:
        if self._finished_since_compaction * 2 < len(self._order):
            return
        self._order = [rid for rid in self._order if self.records[rid].state in _IN_PLAY]
        self._in_order = set(self._order)
        self._finished_since_compaction = 0

    def record(self, record_id: str) -> CallRecord:
        rec = self.records.get(record_id)
        if rec is None:
            raise CampaignError(f"campaign {self.name!r} has no record {record_id!r}")
        return rec

    # ------------------------------------------------------------ dialling

    def due(self, now: float, limit: int, screen: ScreenHook | None = None,
            agent: str | None = None) -> tuple[list[CallRecord], list[dict[str, Any]]]:
        """Up to ``limit`` records dialable at ``now`` (oldest import first), and log rows.

        A record whose number ``screen`` refuses is finished as ``blocked``
        (a log row says why).  Callbacks booked for an agent are offered only
        when ``agent`` is that agent (or ``None``: any).  Nothing is due
        unless the campaign is running.
        """
        out: list[CallRecord] = []
        rows: list[dict[str, Any]] = []
        if self.state is not CampaignState.RUNNING or limit <= 0:
            return out, rows
        self._compact()
        for rid in self._order:
            rec = self.records[rid]
            if rec.state is not RecordState.WAITING or rec.next_ts > now:
                continue
            if rec.callback_agent and agent is not None and rec.callback_agent != agent:
                continue
            if not in_calling_hours(now, rec.time_zone, self.campaign.calling_hours, self.campaign.holidays):
                continue
            reason = screen(self.tenant, self.name, rec.number) if screen else None
            if reason:
                rec.state = RecordState.BLOCKED
                rec.last_outcome = "blocked"
                self._finished_since_compaction += 1
                rows.append(self.log_row(now, "blocked", rec, outcome="blocked", data={"reason": reason}))
                logger.info("campaign %s: %s blocked (%s)", self.name, rec.number, reason)
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out, rows

    def begin_attempt(self, record_id: str, call_id: str, now: float, agent: str = "") -> dict[str, Any]:
        """Mark the record dialling; returns the ``attempt`` row to write *before* the INVITE."""
        rec = self.record(record_id)
        if rec.state is not RecordState.WAITING:
            raise Conflict(f"record {record_id!r} of campaign {self.name!r} is {rec.state.value}, not waiting")
        rec.state = RecordState.DIALING
        rec.attempts += 1
        rec.call_id = call_id
        self._by_call[call_id] = record_id
        return self.log_row(now, "attempt", rec, call_id=call_id, agent=agent)

    def record_for_call(self, call_id: str) -> CallRecord | None:
        rid = self._by_call.get(call_id)
        return self.records.get(rid) if rid else None

    def finish_attempt(self, call_id: str, outcome: str, now: float, *, amd: str = "", agent: str = "",
                       wait_s: float | None = None, talk_s: float | None = None,
                       data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the outcome of the attempt ``call_id``; returns the ``result`` row.

        ``answered`` finishes the record (``done``); an outcome with a retry
        rule schedules the next attempt after ``delay_s`` while attempts are
        left (the rule's ``max_attempts``, else the campaign's); anything
        else finishes it as ``failed``.
        """
        if outcome not in OUTCOMES:
            raise CampaignError(f"unknown call outcome {outcome!r} (expected one of {', '.join(OUTCOMES)})")
        rid = self._by_call.pop(call_id, None)
        if rid is None:
            raise CampaignError(f"campaign {self.name!r} has no attempt with call id {call_id!r}")
        rec = self.records[rid]
        rec.last_outcome = outcome
        rec.call_id = ""
        next_ts = self._schedule(rec, outcome, now)
        return self.log_row(now, "result", rec, call_id=call_id, outcome=outcome, amd=amd, agent=agent,
                         next_ts=next_ts, wait_s=wait_s, talk_s=talk_s, data=data or {})

    def withdraw_attempt(self, call_id: str, now: float) -> dict[str, Any]:
        """An attempt whose row was written but whose INVITE was never sent (the campaign was
        paused or stopped while the row was flushed): nobody was called, so the record is due
        again at once.  Returns the ``result`` row (outcome ``interrupted`` with ``next_ts``, so a
        replay leaves it waiting too; the attempt still counts, as it does on replay)."""
        rid = self._by_call.pop(call_id, None)
        if rid is None:
            raise CampaignError(f"campaign {self.name!r} has no attempt with call id {call_id!r}")
        rec = self.records[rid]
        rec.call_id = ""
        rec.last_outcome = INTERRUPTED
        rec.state = RecordState.WAITING
        rec.next_ts = now
        return self.log_row(now, "result", rec, call_id=call_id, outcome=INTERRUPTED, next_ts=now,
                            data={"reason": "not dialled: the campaign was paused or stopped"})

    def _schedule(self, rec: CallRecord, outcome: str, now: float) -> float | None:
        rule = self.rules.get(outcome)
        limit = (rule.max_attempts or self.campaign.max_attempts) if rule else 0
        if rule is not None and rec.attempts < limit and outcome != ANSWERED:
            rec.state = RecordState.WAITING
            rec.next_ts = now + rule.delay_s
            return rec.next_ts
        rec.state = RecordState.DONE if outcome == ANSWERED else RecordState.FAILED
        self._finished_since_compaction += 1
        return None

    def skip(self, record_id: str, now: float, agent: str = "") -> dict[str, Any]:
        """Preview: the agent skipped the record (not dialled, not retried)."""
        rec = self.record(record_id)
        if rec.state is not RecordState.WAITING:
            raise Conflict(f"record {record_id!r} is {rec.state.value}, not waiting")
        rec.state = RecordState.SKIPPED
        self._finished_since_compaction += 1
        return self.log_row(now, "skipped", rec, agent=agent)

    def disposition(self, record_id: str, disposition: str, now: float, *, agent: str = "",
                    callback_ts: float | None = None, notes: str = "", call_id: str = "") -> dict[str, Any]:
        """The agent's disposition of a record; ``callback_ts`` books it again for that time and agent."""
        rec = self.record(record_id)
        if not disposition or len(disposition) > 64:
            raise CampaignError("disposition must be 1 to 64 characters")
        if rec.state is RecordState.DIALING:
            raise Conflict(f"record {record_id!r} is still being dialled")
        rec.disposition = disposition
        data: dict[str, Any] = {"disposition": disposition}
        if notes:
            data["notes"] = notes[:MAX_FIELD_CHARS]
        if callback_ts is not None:
            if callback_ts <= now:
                raise CampaignError("callback time is in the past")
            rec.state = RecordState.WAITING
            rec.next_ts = callback_ts
            rec.callback_agent = agent
            self._enlist(rec.record_id)
        return self.log_row(now, "disposition", rec, call_id=call_id, agent=agent, next_ts=callback_ts, data=data)

    def next_wakeup(self, now: float) -> float | None:
        """Earliest time a waiting record may come due (retry time or calling-hours start)."""
        best: float | None = None
        for rid in self._order:
            rec = self.records[rid]
            if rec.state is not RecordState.WAITING:
                continue
            t = next_window_start(max(now, rec.next_ts), rec.time_zone, self.campaign.calling_hours,
                                  self.campaign.holidays)
            if t is not None and (best is None or t < best):
                best = t
        return best

    def exhausted(self) -> bool:
        """True when no record is waiting or dialling (the campaign can complete)."""
        return all(self.records[rid].state not in _IN_PLAY for rid in self._order)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in RecordState}
        for r in self.records.values():
            out[r.state.value] += 1
        out["total"] = len(self.records)
        return out

    # ------------------------------------------------------------ persistence

    def replay(self, records: Iterable[dict[str, Any]], log: Iterable[dict[str, Any]],
               now: float) -> list[dict[str, Any]]:
        """Rebuild from stored ``campaign_records`` and ``campaign_log`` rows (in id order).

        Returns ``result`` rows (outcome ``interrupted``) for attempts that
        were begun but never finished: the engine stopped mid-call.  Those
        records are finished, not retried.
        """
        for r in records:
            fields = r["fields"]
            rec = CallRecord(record_id=r["record_id"], number=r["number"], time_zone=r["time_zone"],
                             fields=json.loads(fields) if isinstance(fields, str) else dict(fields))
            if rec.record_id not in self.records:
                self._add(rec)
        open_calls: dict[str, CallRecord] = {}
        for row in log:
            rec = self.records.get(row.get("record_id") or "")
            if rec is None:
                continue
            event = row["event"]
            if event == "attempt":
                rec.state = RecordState.DIALING
                rec.attempts = max(rec.attempts, int(row["attempt"]))
                rec.call_id = row["call_id"]
                open_calls[row["call_id"]] = rec
            elif event == "result":
                open_calls.pop(row["call_id"], None)
                rec.call_id = ""
                rec.last_outcome = row["outcome"]
                rec.state = _RESULT_STATE.get(row["outcome"], RecordState.FAILED)
                if row.get("next_ts") is not None and row["outcome"] != ANSWERED:
                    rec.state = RecordState.WAITING
                    rec.next_ts = float(row["next_ts"])
            elif event == "blocked":
                rec.state = RecordState.BLOCKED
                rec.last_outcome = "blocked"
            elif event == "skipped":
                rec.state = RecordState.SKIPPED
            elif event == "disposition":
                data = row.get("data") or "{}"
                data = json.loads(data) if isinstance(data, str) else data
                rec.disposition = data.get("disposition", "")
                if row.get("next_ts") is not None:
                    rec.state = RecordState.WAITING
                    rec.next_ts = float(row["next_ts"])
                    rec.callback_agent = row.get("agent", "")
        out = []
        for call_id, rec in open_calls.items():
            self._by_call[call_id] = rec.record_id
            row = self.finish_attempt(call_id, INTERRUPTED, now)
            row["data"] = {"reason": "engine stopped during the attempt"}
            out.append(row)
            logger.warning("[%s] campaign %s: attempt on %s was in progress at restart; not redialled",
                           call_id, self.name, rec.number)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tenant": self.tenant, "mode": self.campaign.mode,
                "state": self.state.value, "records": self.counts()}


_RESULT_STATE = {ANSWERED: RecordState.DONE}
_IN_PLAY = (RecordState.WAITING, RecordState.DIALING)


def render_message(template: str, fields: dict[str, str]) -> str:
    """``template`` with ``{field}`` replaced by the record's fields (unknown names stay as written)."""
    def sub(m: re.Match[str]) -> str:
        return fields.get(m[1], m[0])
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, template)


__all__ = ["ANSWERED", "CAMPAIGN_TRANSITIONS", "INTERRUPTED", "OUTCOMES", "CallRecord", "CampaignBook",
           "CampaignError", "CampaignState", "CampaignTrigger", "DncList", "ImportResult", "RecordState",
           "ScreenHook", "in_calling_hours", "next_window_start", "normalise_number", "render_message",
           "zone_for"]
