"""Editing and deleting campaigns at run time: which change is allowed when, sans-IO.

Theory of operation
-------------------
``campaign.update`` sends *changes*: some keys of a ``[campaigns.NAME]``
table.  :func:`plan_update` decides, from the campaign's state and its
calls in progress, whether they may apply, and returns the merged
definition that :func:`engine.config.build_campaign` then checks exactly
like ``campaign.create`` (so a change can never produce a campaign the
configuration file would refuse).  Keys fall in three classes:

* :data:`LIVE_KEYS`, editable at any time, even while dialling: they are
  read afresh at every decision (caller id of the next INVITE, calling
  hours and holidays at the next tick, retry rules and attempt limits at
  the next outcome, pacing parameters at the next pacing decision, the
  agents counted at the next tick, wrap-up and drop message of the next
  call).  Calls in progress keep what they were given.
* :data:`IDLE_KEYS` change what a call *is* (mode, trunk, queue, AMD and
  what to do with machines, the notification message and its confirm
  digit, the survey flow): refused with ``invalid_state`` while the
  campaign is ``running`` or still has calls in progress or preview
  records held (pause or stop it, let the calls end, then edit).  A
  ``preview`` campaign switched to another mode mid-way would strand held
  records; a notification whose message changes mid-call would be heard
  half old, half new.
* :data:`FIXED_KEYS` are never editable: ``name`` and ``tenant`` identify
  the campaign's rows in the store; ``time_zone`` and
  ``prefix_time_zones`` were applied to every record at import (changing
  them would silently leave the imported records in the old zones), and
  ``autostart`` only means something for campaigns of the configuration
  file.  ``invalid_args`` names the key and why.

Campaigns of the configuration file are edited in the file (``conflict``):
a run-time edit would be lost, or worse, silently fight the file, at the
next start.

:func:`check_delete` allows ``campaign.delete`` in states ``created``,
``stopped`` and ``completed`` with no call in progress (``invalid_state``
otherwise: stop it first).  Deleting is soft: the campaign leaves the
engine (its ops answer ``not_found``) but its ``campaign_records`` and
``campaign_log`` rows stay, so ``campaign.report`` still reports it and
its name cannot be reused (the log is keyed by name).
"""
from __future__ import annotations

from typing import Any

from engine.campaign import CampaignState
from engine.errors import Conflict, InvalidArgs, InvalidState

LIVE_KEYS = frozenset({
    "caller_number", "calling_hours", "holidays", "max_attempts", "retries", "ring_timeout_s",
    "max_drop_rate", "drop_window_calls", "connect_timeout_s", "max_channels", "groups", "agents",
    "drop_message", "preview_timeout_s", "wrapup_s"})
IDLE_KEYS = frozenset({"mode", "trunk", "queue", "amd", "machine_action", "message", "confirm_digit",
                       "confirm_timeout_s", "flow"})
FIXED_KEYS: dict[str, str] = {
    "name": "the name identifies the campaign's records and log",
    "tenant": "the tenant of a campaign never changes",
    "time_zone": "record zones were fixed at import: create a new campaign and import the numbers there",
    "prefix_time_zones": "record zones were fixed at import: create a new campaign and import the numbers there",
    "autostart": "only campaigns of the configuration file start with the engine",
}


def plan_update(name: str, definition: dict[str, Any], changes: dict[str, Any], state: CampaignState,
                in_progress: int, *, source: str = "runtime") -> dict[str, Any]:
    """The merged definition after ``changes``, or the reason they may not apply.

    ``definition`` is the stored definition (without ``tenant``), ``state``
    the campaign's state, ``in_progress`` its calls in progress plus
    preview records held.  Raises ``conflict`` (a configuration-file
    campaign), ``invalid_args`` (no change, unknown or fixed key) or
    ``invalid_state`` (a key of :data:`IDLE_KEYS` while dialling).
    """
    if source != "runtime":
        raise Conflict(f"campaign {name!r} is defined in the configuration file: edit the file and reload")
    if not changes:
        raise InvalidArgs("campaign.update: no changes given")
    if not all(isinstance(k, str) for k in changes):
        raise InvalidArgs("campaign.update: every key of 'changes' must be a string")
    for key in sorted(changes):
        if key in FIXED_KEYS:
            raise InvalidArgs(f"campaign.update: {key!r} cannot be changed ({FIXED_KEYS[key]})")
        if key not in LIVE_KEYS and key not in IDLE_KEYS:
            raise InvalidArgs(f"campaign.update: unknown key {key!r} (editable: "
                              f"{', '.join(sorted(LIVE_KEYS | IDLE_KEYS))})")
    idle = sorted(k for k in changes if k in IDLE_KEYS and changes[k] != definition.get(k))
    if idle:
        if state is CampaignState.RUNNING:
            raise InvalidState(f"campaign {name!r} is running: pause or stop it before changing "
                               f"{', '.join(idle)}")
        if in_progress:
            raise InvalidState(f"campaign {name!r} has {in_progress} call(s) in progress or preview record(s) "
                               f"held: wait for them to end before changing {', '.join(idle)}")
    return {**definition, **changes}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{key: {"from": old or None, "to": new}}`` for each key whose value differs."""
    return {k: {"from": old.get(k), "to": new[k]} for k in sorted(new) if old.get(k) != new[k]}


def check_delete(name: str, state: CampaignState, in_progress: int, *, source: str = "runtime") -> None:
    """Raise unless the campaign may be deleted now (see the module docstring)."""
    if source != "runtime":
        raise Conflict(f"campaign {name!r} is defined in the configuration file: remove it there")
    if state in (CampaignState.RUNNING, CampaignState.PAUSED):
        raise InvalidState(f"campaign {name!r} is {state.value}: stop it before deleting it")
    if in_progress:
        raise InvalidState(f"campaign {name!r} still has {in_progress} call(s) in progress or preview "
                           f"record(s) held: wait for them to end")


__all__ = ["FIXED_KEYS", "IDLE_KEYS", "LIVE_KEYS", "changed_keys", "check_delete", "plan_update"]
