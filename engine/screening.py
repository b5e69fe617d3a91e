"""Call screening: block and allow lists by number and prefix, with time windows.

Theory of operation
-------------------
A screening list is a ``[screening.NAME]`` table (``engine.config.ScreeningList``):
a ``kind`` (``block``, ``allow`` or ``exempt``), caller-number patterns (exact, or a
prefix ending in ``*``; ``"*"`` matches every caller), an optional set of
dialed numbers it applies to, optional time ``windows`` in which it is
active (days, ``HH:MM`` start inclusive, end exclusive, in the list's
``time_zone`` or ``[engine] time_zone``) and what happens to a screened
call (``action``: ``reject`` with ``reject_status``, or ``message``:
answer, play ``message``/``message_file``, hang up).

Numbers can be added to and removed from a configured list at run time
(control ops ``screening.add`` / ``screening.remove``,
docs/control-screening-ops.md).  Those changes are rows of the store's
``screening_log`` table (``add`` / ``remove``, who, when, a note): the
table is the durable history and :meth:`Screening.load` replays it at
start, so the live entries survive a restart and every change is
auditable.  The outbound dialer's do-not-call check uses the same object
(:meth:`Screening.listed`).

The decision (:func:`decide`, pure: wall time passed in) for a call from
``caller`` to ``dialed`` in ``tenant``, over the lists of that tenant that
apply to ``dialed`` and are active now:

1. the caller is on an active ``allow`` or ``exempt`` list → through (these
   win over block lists: a VIP stays reachable inside a blocked prefix);
2. the caller is on an active ``block`` list → screened by that list;
3. an ``allow`` list is active but the caller is on none → screened by the
   first such list (a "whitelist-only" window, e.g. a night line that only
   known callers may reach);
4. otherwise → through.

A screened call never reaches routing, the IVR or the ACD.  It gets a CDR
row with disposition ``blocked`` and ``end_reason`` ``screened:<list>``
(``reject``) or, after the message, the reason the call ended.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable
from zoneinfo import ZoneInfo

from engine.config import Config, ScreeningList, _check_number_pattern
from engine.errors import Conflict, InvalidArgs, NotFound
from engine.routing import in_rules, number_matches

if TYPE_CHECKING:
    from engine.callpath import CallCentre

logger = logging.getLogger("engine.screening")

LOG_TABLE = "screening_log"
REPLAY_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a call is screened out and what to do with it."""

    list: str
    kind: str
    """``block`` (the caller is listed) or ``allow`` (the caller is not on an active allow list)."""
    pattern: str
    """The matching pattern (``""`` for an allow-list miss)."""
    action: str
    status: int
    reason: str
    message: str
    message_file: str


def list_active(sl: ScreeningList, dialed: str, wall_time: float, default_zone: str) -> bool:
    """Does ``sl`` apply to a call to ``dialed`` at Unix time ``wall_time``?"""
    if sl.dialed_numbers and not any(number_matches(p, dialed) for p in sl.dialed_numbers):
        return False
    if not sl.windows:
        return True
    local = dt.datetime.fromtimestamp(wall_time, ZoneInfo(sl.time_zone or default_zone))
    return in_rules(sl.windows, local)


def _match(patterns: Iterable[str], number: str) -> str | None:
    return next((p for p in patterns if number_matches(p, number)), None)


def decide(lists: Iterable[tuple[ScreeningList, Iterable[str]]], tenant: str, caller: str, dialed: str,
           wall_time: float, default_zone: str) -> Verdict | None:
    """The screening decision (module docstring); ``lists`` pairs each list with all its patterns."""
    active = [(sl, list(pats)) for sl, pats in lists
              if sl.tenant == tenant and list_active(sl, dialed, wall_time, default_zone)]
    allows = [(sl, pats) for sl, pats in active if sl.kind == "allow"]
    if any(_match(pats, caller) for sl, pats in active if sl.kind != "block"):
        return None
    for sl, pats in active:
        if sl.kind == "block":
            hit = _match(pats, caller)
            if hit is not None:
                return _verdict(sl, hit)
    if allows:
        return _verdict(allows[0][0], "")
    return None


def _verdict(sl: ScreeningList, pattern: str) -> Verdict:
    from sip.message import REASON_PHRASES

    reason = sl.reject_reason or REASON_PHRASES.get(sl.reject_status, "Rejected")
    return Verdict(sl.name, sl.kind, pattern, sl.action, sl.reject_status, reason, sl.message, sl.message_file)


def check_pattern(number: str) -> str:
    """A run-time entry is a config number pattern; raises ``InvalidArgs`` otherwise."""
    reason = _check_number_pattern(number)
    if reason:
        raise InvalidArgs(reason)
    return number


class Screening:
    """Configured lists plus run-time entries (see the module docstring)."""

    def __init__(self, config: Config, store: Any = None) -> None:
        self.config = config
        self.store = store
        self.runtime: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in config.screening}
        """list name -> pattern -> ``{"ts", "user", "note"}`` of entries added at run time."""

    # ------------------------------------------------------------------ persistence
    def load(self) -> int:
        """Replay ``screening_log`` (blocking; call in a worker thread).  Returns the live entry count."""
        if self.store is None:
            return 0
        for row in self.store.select(LOG_TABLE, limit=REPLAY_LIMIT):
            entries = self.runtime.get(row["list"])
            sl = self.config.screening.get(row["list"])
            if entries is None or sl is None or sl.tenant != row["tenant"]:
                continue  # a list that was removed from the configuration
            if row["action"] == "add":
                entries[row["number"]] = {"ts": row["ts"], "user": row["user"], "note": row["note"]}
            else:
                entries.pop(row["number"], None)
        return sum(len(e) for e in self.runtime.values())

    def _log(self, sl: ScreeningList, action: str, number: str, user: str, note: str, ts: float) -> None:
        if self.store is not None:
            self.store.append(LOG_TABLE, {"ts": ts, "tenant": sl.tenant, "list": sl.name, "number": number,
                                          "action": action, "user": user, "note": note})

    # ------------------------------------------------------------------ management
    def get_list(self, name: str) -> ScreeningList:
        sl = self.config.screening.get(name)
        if sl is None:
            raise NotFound(f"no screening list {name!r} (lists are declared as [screening.NAME])")
        return sl

    def add(self, name: str, number: str, *, user: str = "", note: str = "", ts: float | None = None) -> dict:
        sl = self.get_list(name)
        check_pattern(number)
        entries = self.runtime[name]
        if number in sl.numbers or number in entries:
            raise Conflict(f"{number!r} is already on screening list {name!r}")
        ts = time.time() if ts is None else ts
        entries[number] = {"ts": ts, "user": user, "note": note}
        self._log(sl, "add", number, user, note, ts)
        return self.describe_entry(name, number)

    def remove(self, name: str, number: str, *, user: str = "", note: str = "", ts: float | None = None) -> None:
        sl = self.get_list(name)
        if number in sl.numbers:
            raise Conflict(f"{number!r} is in the configuration of list {name!r}: edit the config file")
        if self.runtime[name].pop(number, None) is None:
            raise NotFound(f"{number!r} is not on screening list {name!r}")
        self._log(sl, "remove", number, user, note, time.time() if ts is None else ts)

    def describe_entry(self, name: str, number: str) -> dict[str, Any]:
        meta = self.runtime[name].get(number)
        if meta is None:
            return {"number": number, "source": "config"}
        return {"number": number, "source": "runtime", **meta}

    def describe(self, name: str) -> dict[str, Any]:
        sl = self.get_list(name)
        return {"list": name, "tenant": sl.tenant, "kind": sl.kind, "action": sl.action,
                "dialed_numbers": list(sl.dialed_numbers), "windowed": bool(sl.windows),
                "entries": [self.describe_entry(name, n) for n in (*sl.numbers, *self.runtime[name])]}

    # ------------------------------------------------------------------ decisions
    def patterns(self, name: str) -> tuple[str, ...]:
        return (*self.config.screening[name].numbers, *self.runtime[name])

    def check(self, tenant: str, caller: str, dialed: str, wall_time: float) -> Verdict | None:
        """The inbound decision for a call (:func:`decide`)."""
        return decide(((sl, self.patterns(name)) for name, sl in self.config.screening.items()),
                      tenant, caller, dialed, wall_time, self.config.engine.time_zone)

    def listed(self, tenant: str, number: str, wall_time: float, *, kind: str = "block") -> list[str]:
        """Names of the active lists of ``kind`` in ``tenant`` on which ``number`` is (do-not-call checks).

        ``dialed_numbers`` of a list is ignored here: an outbound call has no
        dialed number of ours.
        """
        out = []
        for name, sl in self.config.screening.items():
            if sl.tenant != tenant or sl.kind != kind:
                continue
            if sl.windows:
                local = dt.datetime.fromtimestamp(wall_time, ZoneInfo(sl.time_zone or self.config.engine.time_zone))
                if not in_rules(sl.windows, local):
                    continue
            if _match(self.patterns(name), number) is not None:
                out.append(name)
        return out


class ScreenedCalls:
    """What the call path does with a screened call (reject, or message then hang-up)."""

    def __init__(self, centre: "CallCentre") -> None:
        self.centre = centre
        self.screening: Screening | None = None
        self.players: dict[str, str] = {}  # message player id -> call id

    async def start(self, config: Config, store: Any) -> None:
        self.screening = Screening(config, store)
        n = await asyncio.get_running_loop().run_in_executor(None, self.screening.load)
        logger.info("screening: %d list(s), %d run-time entr%s", len(config.screening), n, "y" if n == 1 else "ies")

    def check(self, tenant: str, caller: str, dialed: str) -> Verdict | None:
        if self.screening is None or not self.config_lists():
            return None
        return self.screening.check(tenant, caller, dialed, time.time())

    def config_lists(self) -> bool:
        return bool(self.screening and self.screening.config.screening)

    def screen_out(self, ev: Any, trunk: Any, caller: str, dialed: str, verdict: Verdict) -> None:
        """Reject the INVITE, or answer it and play the list's message (then hang up)."""
        from engine.app import CallLogger
        from engine.calls import Call

        centre, req = self.centre, ev.request
        log = CallLogger(logger, {"call_id": req.call_id})
        log.info("caller %s → %s screened by list %s (%s%s): %s", caller or "anonymous", dialed, verdict.list,
                 verdict.kind, f" {verdict.pattern}" if verdict.pattern else "", verdict.action)
        if verdict.action == "message":
            call = centre.answer_caller(ev, trunk, caller, dialed, route="")
            if call is not None:
                call.disposition = "blocked"
                call.end_reason = f"screened:{verdict.list}"
                centre._spawn(self._play(call, verdict))
            return
        centre.endpoint.respond(ev.transaction, verdict.status, verdict.reason)  # type: ignore[union-attr]
        call = Call(req.call_id, trunk.tenant, caller, dialed, trunk.name, "")
        call.disposition, call.end_reason, call.end_ts = "blocked", f"screened:{verdict.list}", time.time()
        centre._store("cdr", call.cdr_row())
        centre.engine.bus.publish("call.blocked", {**call.describe(), "list": verdict.list, "action": "reject",
                                                   "status": verdict.status}, tenant=call.tenant)

    async def _play(self, call: Any, verdict: Verdict) -> None:
        from engine.ivrbridge import prompt_audio
        from ivr.actions import PromptItem
        from media.player import ArraySource

        centre = self.centre
        cfg = centre.config
        assert cfg is not None
        item = (PromptItem("file", cfg.resolve_path(verdict.message_file), "") if verdict.message_file
                else PromptItem("tts", verdict.message, "en"))
        audio = await asyncio.get_running_loop().run_in_executor(None, prompt_audio, (item,))
        centre.engine.bus.publish("call.blocked", {**call.describe(), "list": verdict.list, "action": "message"},
                                  tenant=call.tenant)
        media = centre.media
        if call.call_id not in centre.calls or media is None or call.caller is None \
                or call.caller.leg_id not in media.legs:
            return
        if audio.size == 0:
            centre.hangup(call, f"screened:{verdict.list}")
            return
        self.players[media.play(ArraySource(audio), leg_id=call.caller.leg_id)] = call.call_id

    def playback_finished(self, player_id: str) -> bool:
        """``PlaybackFinished`` of a screening message: hang up.  True when it was one."""
        call_id = self.players.pop(player_id, None)
        if call_id is None:
            return False
        call = self.centre.calls.get(call_id)
        if call is not None:
            self.centre.hangup(call, call.end_reason or "screened")
        return True
