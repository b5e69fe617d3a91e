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
    ("media", c.MediaSection), ("store", c.StoreSection), ("control", c.ControlSection),
    ("control.listen[]", c.ControlListener), ("recording", c.RecordingSection),
    ("recording.windows[] / hours.NAME.rules[]", c.TimeRule), ("tenants.NAME", c.Tenant),
    ("users.NAME", c.User), ("skills.NAME", c.Skill), ("groups.NAME", c.Group), ("agents.NUMBER", c.Agent),
    ("trunks.NAME", c.Trunk), ("queues.NAME", c.Queue), ("queues.NAME.announcements", c.Announcements),
    ("queues.NAME.tiers[]", c.Tier), ("hours.NAME", c.Hours), ("routes[]", c.Route), ("flows.NAME", c.Flow),
]


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
            meaning = "; ".join(x for x in [m.get("doc", "")] + extra if x)
            out.append(f"| `{f.name}` | {c._type_name(hints[f.name])} | {_default(f)} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference_tables())
