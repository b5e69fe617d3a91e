"""Node types of a flow: their keys, defaults and the edges they can take.

Each node is one TOML table ``[nodes.<id>]`` with a ``type`` and the keys of
its type, listed in :data:`SCHEMAS`.  A :class:`KeySpec` says how a value is
parsed (``kind``), whether it is required and its default; the validator
(:mod:`ivr.validate`) applies the specs, so this table *is* the format's
reference and ``docs/ivr.md`` documents exactly these keys.

Node kinds by what they wait for (the static loop check in the validator
relies on it): ``play``, ``menu``, ``collect``, ``survey``, ``callback``,
``queue``, ``transfer``, ``voicemail`` wait for audio, the caller or the
engine; ``set``, ``branch``, ``goto``, ``language``, ``lookup`` pass straight
through, so a cycle made only of them would spin without input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How one key of a node is read.

    ``kind`` is one of: ``node`` (id of another node), ``prompts`` (prompt or
    list of prompts), ``duration`` (seconds > 0), ``count`` (integer >= 0),
    ``positive`` (integer >= 1), ``int``, ``bool``, ``str``, ``template``
    (string with ``{variables}``), ``digits`` (DTMF characters), ``choices``
    (table digit → node), ``variables`` (table name → template or ``=expr``),
    ``rules`` (array of branch rules), ``regex``, ``language``, ``strlist``,
    ``numbers`` (``"number1$number2"``), ``name`` (identifier).
    """

    kind: str
    required: bool = False
    default: Any = None
    doc: str = ""


def _k(kind: str, doc: str, default: Any = None, required: bool = False) -> KeySpec:
    return KeySpec(kind, required, default, doc)


def _req(kind: str, doc: str) -> KeySpec:
    return KeySpec(kind, True, None, doc)


_INPUT_COMMON = {
    "invalid_prompts": _k("prompts", "played before re-prompting after a wrong entry", ()),
    "timeout_prompts": _k("prompts", "played before re-prompting after no entry", ()),
    "barge_in": _k("bool", "a digit stops the prompt", True),
}

COMMON = {
    "type": _req("str", "the node type"),
    "description": _k("str", "free text shown in the drawing", ""),
}

SCHEMAS: dict[str, dict[str, KeySpec]] = {
    "play": {
        "prompts": _req("prompts", "what to play"),
        "next": _req("node", "node after the prompts"),
        "barge_in": _k("bool", "a digit skips the prompts (and is kept for the next menu)", False),
    },
    "menu": {
        "prompts": _req("prompts", "the menu prompt"),
        "choices": _req("choices", "digit → node"),
        "timeout_s": _k("duration", "wait for a digit after the prompt", 5.0),
        "retries": _k("positive", "attempts before giving up", 3),
        "on_invalid": _k("node", "after the last wrong digit (default on_failure)"),
        "on_timeout": _k("node", "after the last timeout (default on_failure)"),
        "on_failure": _req("node", "after the last failed attempt"),
        "variable": _k("name", "store the chosen digit in this variable"),
        **_INPUT_COMMON,
    },
    "collect": {
        "prompts": _req("prompts", "the prompt asking for digits"),
        "variable": _req("name", "variable receiving the digits"),
        "min_digits": _k("positive", "fewest digits accepted", 1),
        "max_digits": _k("positive", "entry ends by itself at this length", 20),
        "terminator": _k("digits", "key ending the entry (\"\" for none)", "#"),
        "first_digit_timeout_s": _k("duration", "wait for the first digit after the prompt", 5.0),
        "inter_digit_timeout_s": _k("duration", "wait between digits (ends the entry when min_digits reached)", 3.0),
        "pattern": _k("regex", "regular expression the whole entry must match"),
        "retries": _k("positive", "attempts before giving up", 3),
        "next": _req("node", "node after a valid entry"),
        "on_failure": _req("node", "node after the last failed attempt"),
        **_INPUT_COMMON,
    },
    "set": {
        "variables": _req("variables", "name → template, or \"= expression\""),
        "next": _req("node", "next node"),
    },
    "branch": {
        "rules": _req("rules", "rules tried in order; the first that matches wins"),
        "default": _req("node", "node when no rule matches"),
    },
    "lookup": {
        "csv": _k("str", "CSV file (relative to the flow file) to search"),
        "table": _k("str", "store table to search (the engine runs the query)"),
        "column": _req("str", "column compared with the key"),
        "key": _req("template", "value searched, e.g. \"{account}\""),
        "into": _req("name", "prefix of the variables receiving the row's columns (into_column)"),
        "found": _req("node", "node when a row was found"),
        "not_found": _req("node", "node when no row matches"),
        "on_error": _k("node", "node when the lookup failed or timed out (default not_found)"),
        "timeout_s": _k("duration", "give up waiting for the result", 5.0),
    },
    "queue": {
        "queue": _req("str", "queue / skill group name"),
        "priority": _k("int", "higher is served first", 0),
        "skills": _k("strlist", "extra skills required", ()),
        "music_on_hold": _k("str", "music class played while waiting", "default"),
        "announce_interval_s": _k("count", "seconds between position/wait announcements (0: none)", 30),
        "announce_prompts": _k("prompts", "the periodic announcement",
                               ({"tts": "You are number {queue_position} in the queue. "
                                        "The expected wait is {expected_wait_min} minutes."},)),
        "max_wait_s": _k("duration", "leave the queue after this long"),
        "exits": _k("choices", "digit → node while waiting (e.g. callback, voicemail)", {}),
        "on_timeout": _k("node", "after max_wait_s (default on_failure)"),
        "on_failure": _req("node", "when the queue rejects or closes"),
        "announce_agent": _k("bool", "tell the caller the agent's number before connecting", False),
        "agent_prompts": _k("prompts", "the agent announcement",
                            ({"tts": "You are connected to agent"}, {"say_digits": "{agent_number}"})),
    },
    "transfer": {
        "agent": _k("template", "agent number"),
        "queue": _k("template", "queue name (blind transfer to the ACD)"),
        "flow": _k("template", "another flow"),
        "numbers": _k("numbers", "external numbers tried in order: \"number1$number2\""),
        "prompts": _k("prompts", "played before the first attempt", ()),
        "timeout_s": _k("duration", "ring time per attempt", 20.0),
        "announce_agent": _k("bool", "announce the agent number first (agent transfers)", False),
        "agent_prompts": _k("prompts", "the agent announcement",
                            ({"tts": "You are connected to agent"}, {"say_digits": "{agent_number}"})),
        "on_failure": _req("node", "when every attempt failed"),
    },
    "voicemail": {
        "mailbox": _req("template", "mailbox (agent number, group, ...)"),
        "prompts": _k("prompts", "greeting before the beep",
                      ({"tts": "Please leave a message after the tone."},)),
        "max_length_s": _k("duration", "longest message", 120.0),
        "beep": _k("bool", "beep before recording", True),
        "next": _k("node", "node after the message (default: hang up)"),
    },
    "survey": {
        "survey": _req("name", "survey name (reports group by it)"),
        "question": _req("name", "question id"),
        "prompts": _req("prompts", "the question"),
        "digits": _req("digits", "allowed answers, e.g. \"12345\""),
        "timeout_s": _k("duration", "wait for the answer", 5.0),
        "retries": _k("positive", "attempts", 2),
        "next": _req("node", "node after an answer"),
        "on_failure": _k("node", "node when no valid answer (default next)"),
        **_INPUT_COMMON,
    },
    "callback": {
        "queue": _k("str", "queue whose place is kept (default: the last queue entered)"),
        "number": _k("template", "number proposed", "{caller_number}"),
        "prompts": _k("prompts", "read-back and confirmation",
                      ({"tts": "We will call you back at"}, {"say_digits": "{callback_number}"},
                       {"tts": "Press 1 to confirm, or 2 to enter another number."})),
        "enter_prompts": _k("prompts", "asks for another number",
                            ({"tts": "Please enter your phone number, then press hash."},)),
        "min_digits": _k("positive", "shortest number accepted", 6),
        "max_digits": _k("positive", "longest number accepted", 15),
        "timeout_s": _k("duration", "wait for a key / between digits", 5.0),
        "retries": _k("positive", "attempts", 3),
        "keep_place": _k("bool", "the callback keeps the caller's queue position", True),
        "next": _req("node", "node after the callback is registered"),
        "on_failure": _req("node", "node when the caller never confirms"),
        **_INPUT_COMMON,
    },
    "language": {
        "language": _req("language", "language code for every later prompt"),
        "next": _req("node", "next node"),
    },
    "hangup": {
        "prompts": _k("prompts", "played before hanging up", ()),
        "reason": _k("str", "reason recorded with the call", "normal"),
    },
    "goto": {
        "next": _req("node", "the node to continue with"),
    },
}

RULE_KEYS: dict[str, KeySpec] = {
    "if": _k("expression", "expression over variables"),
    "caller_in": _k("strlist", "caller number is one of these"),
    "caller_prefix": _k("strlist", "caller number starts with one of these"),
    "dialed_in": _k("strlist", "dialled number is one of these"),
    "time": _k("timerange", "local time within HH:MM-HH:MM"),
    "days": _k("days", "local weekday in this list (mon..sun, ranges mon-fri)"),
    "holiday": _k("bool", "today is (true) / is not (false) in the holiday calendar"),
    "next": _req("node", "node when every condition of the rule holds"),
}

FLOW_KEYS: dict[str, KeySpec] = {
    "name": _k("str", "flow name (default: file name)"),
    "start": _req("node", "first node"),
    "languages": _k("strlist", "languages callers may choose", ()),
    "language": _k("language", "initial language (default: fallback_language)"),
    "fallback_language": _k("str", "used when a prompt is missing in the caller's language", "en"),
    "prompt_dir": _k("str", "prompt root, relative to the flow file", "prompts"),
    "timezone": _k("str", "IANA time zone of the centre", "UTC"),
    "holidays": _k("strlist", "YYYY-MM-DD, MM-DD (yearly) or YYYY-MM-DD..YYYY-MM-DD", ()),
    "tenant": _k("str", "tenant owning the flow", "default"),
}

PASS_THROUGH = frozenset({"set", "branch", "goto", "language", "lookup"})
"""Node types that never wait for the caller, audio or a timer."""

INPUT_TYPES = frozenset({"menu", "collect", "survey", "callback"})


@dataclass(slots=True)
class Node:
    """A validated node: ``params`` holds every key of its type, parsed, defaults filled."""

    id: str
    type: str
    line: int
    params: dict[str, Any]
    edges: list[tuple[str, str]] = field(default_factory=list)
    """(label, target node id) for every way out, in file order."""

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


def _default_text(spec: KeySpec) -> str:
    if spec.required:
        return "required"
    value = spec.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if spec.kind == "prompts":
        if not value:
            return "none"
        parts = []
        for item in value:
            key, text = next(iter(item.items()))
            parts.append(f"{key}: {text}")
        return "; ".join(parts).replace("|", "\\|")
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, dict | tuple) and not value:
        return "none"
    return f"`\"{value}\"`" if isinstance(value, str) else f"`{value}`"


def key_table(keys: dict[str, KeySpec]) -> str:
    """Markdown table of keys (docs/ivr.md embeds these; a test keeps them equal)."""
    rows = ["| key | kind | default | meaning |", "|---|---|---|---|"]
    for key, spec in keys.items():
        if key in COMMON:
            continue
        rows.append(f"| `{key}` | {spec.kind} | {_default_text(spec)} | {spec.doc.replace('|', '/')} |")
    return "\n".join(rows)
