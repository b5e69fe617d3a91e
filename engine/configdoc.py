"""The key reference of ``docs/config.md``, generated from the config schema.

``python -m engine.configdoc`` prints the tables; ``tests/engine/test_docs.py``
checks that ``docs/config.md`` contains exactly this text, so the page cannot
fall behind the code.
"""
from __future__ import annotations

import dataclasses

from engine import config as c

SECTIONS: list[tuple[str, type]] = [
    ("engine", c.EngineSection), ("sip", c.SipSection), ("sip.listen[]", c.SipListener),
    ("sip.abuse", c.SipAbuse),
    ("media", c.MediaSection), ("store", c.StoreSection), ("control", c.ControlSection),
    ("control.listen[]", c.ControlListener), ("recording", c.RecordingSection),
    ("reporting", c.ReportingSection),
    ("recording.windows[] / hours.NAME.rules[] / screening.NAME.windows[]", c.TimeRule), ("tenants.NAME", c.Tenant),
    ("users.NAME", c.User), ("skills.NAME", c.Skill), ("groups.NAME", c.Group),
    ("departments.NAME", c.Department), ("teams.NAME", c.Team), ("agents.NUMBER", c.Agent),
    ("trunks.NAME", c.Trunk), ("queues.NAME", c.Queue), ("queues.NAME.announcements", c.Announcements),
    ("queues.NAME.tiers[]", c.Tier), ("hours.NAME", c.Hours), ("routes[]", c.Route), ("flows.NAME", c.Flow),
    ("callpath", c.CallpathSection), ("screening.NAME", c.ScreeningList),
    ("extensions.NUMBER", c.Extension),
    ("campaigns.NAME", c.Campaign), ("campaigns.NAME.retries[]", c.CampaignRetry),
    ("toll_fraud.TENANT", c.TollFraud),
]


# Meanings for keys whose field carries no ``doc`` (by field name, or
# "Class.field" when the name means different things in different places).
FALLBACK_DOCS = {
    "tenant": "tenant the entity belongs to (declare others under [tenants.NAME])",
    "description": "free text",
    "SipSection.user_agent": "User-Agent / Server header value",
    "SipSection.listen": "SIP listeners: `{ transport, host, port }`",
    "SipListener.host": "address to bind",
    "ControlSection.listen": "control-socket listeners: `{ transport = \"tcp\", host, port }` or `{ transport = \"unix\", path }`",
    "ControlListener.host": "address to bind (tcp)",
    "RecordingSection.path": "directory of recording files (per-day folders below it)",
    "RecordingSection.include_agents": "mode `policy`: record calls of these agents",
    "RecordingSection.include_groups": "mode `policy`: record calls answered in these groups",
    "RecordingSection.include_queues": "mode `policy`: record calls of these queues",
    "RecordingSection.include_trunks": "mode `policy`: record calls arriving on these trunks",
    "RecordingSection.include_numbers": "mode `policy`: record calls from/to these number patterns",
    "RecordingSection.exclude_agents": "never record these agents' calls",
    "RecordingSection.exclude_numbers": "never record calls from/to these number patterns",
    "TimeRule.days": "days the rule applies to",
    "TimeRule.start": "start time `HH:MM` (inclusive)",
    "TimeRule.end": "end time `HH:MM` (exclusive; `24:00` = midnight)",
    "User.password": "scrypt hash (`ctiengine passwd`)",
    "User.allow_networks": "networks this user may log in from (empty: any; the Unix socket always)",
    "Agent.name": "display name",
    "Agent.password": "scrypt hash of the agent's login password (`ctiengine passwd`)",
    "Agent.groups": "skill groups the agent belongs to",
    "Trunk.host": "carrier's SIP address (name or IP)",
    "Trunk.dialed_numbers": "numbers (patterns) this trunk delivers",
    "Queue.groups": "groups whose agents answer the queue",
    "Queue.timeout_destination": "destination after `timeout_s`",
    "Queue.music_on_hold": "music class or file played while waiting",
    "Queue.announcements": "position / expected-wait announcements",
    "Queue.tiers": "overflow steps, see below",
    "Announcements.position": "announce the caller's position",
    "Announcements.expected_wait": "announce the expected wait",
    "Announcements.periodic_prompt": "audio file (relative to the config) or `tts:TEXT` played every "
                                     "`periodic_interval_s` (0: `interval_s`) while the caller waits",
    "Tier.groups": "groups added from this tier on",
    "Hours.rules": "opening times: `{ days, start, end }`",
    "Hours.holidays": "closed all day (`YYYY-MM-DD`)",
    "Route.dialed_number": "number or prefix pattern the call was dialed to",
    "Route.destination": "where calls go (inside business hours)",
    "Route.after_hours": "destinations tried in order outside `hours`",
    "SipSection.abuse": "abuse defences, see `[sip.abuse]` and docs/security.md",
    "SipAbuse.auth_failure_window_s": "window of `auth_failures_before_ban`",
    "SipAbuse.sweep_window_s": "window of `sweep_max_users`",
    "TollFraud.tenant": "the tenant (table key) this policy applies to",
}


def _default(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    if f.default is not dataclasses.MISSING:
        d = f.default
        if isinstance(d, tuple) and d and dataclasses.is_dataclass(d[0]):
            return "UDP+TCP 127.0.0.1:5060"
        if isinstance(d, bool):
            return f"`{str(d).lower()}`"
        if isinstance(d, str):
            return f'`"{d}"`'
        if d is None:
            return "(unset)"
        if isinstance(d, tuple):
            return "`[" + ", ".join(f'"{x}"' for x in d) + "]`"
        return f"`{d}`"
    if f.default_factory is not dataclasses.MISSING:
        return "`{}`" if f.default_factory is dict else "(table)"
    return "**required**"


def reference_tables() -> str:
    """Markdown: one table per section, every key with type, default and meaning."""
    out: list[str] = []
    for title, cls in SECTIONS:
        out.append(f"### `[{title}]`\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        hints = c._hints(cls)
        for f in dataclasses.fields(cls):
            m = f.metadata
            if m.get("key") or m.get("internal"):
                continue
            extra = []
            if m.get("min") is not None or m.get("max") is not None:
                extra.append(f"range {m.get('min')}..{m.get('max')}")
            if m.get("choices"):
                extra.append("one of " + ", ".join(f"`{x}`" for x in m["choices"]))
            doc = m.get("doc") or FALLBACK_DOCS.get(f"{cls.__name__}.{f.name}") or FALLBACK_DOCS.get(f.name, "")
            meaning = "; ".join(x for x in [doc] + extra if x)
            out.append(f"| `{f.name}` | {c._type_name(hints[f.name])} | {_default(f)} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference_tables())
