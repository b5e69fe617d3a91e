"""The flow validator: every problem of a flow, each as ``file:line: reason``.

:func:`build_flow` walks the parsed TOML once and collects problems instead
of stopping at the first, in this order of checks:

1. shape: top-level tables (``[flow]``, ``[nodes.*]``), node ids, ``type``
   known, unknown keys (with a "did you mean" hint), missing required keys;
2. values: each key parsed by its kind (:class:`ivr.nodes.KeySpec`):
   durations, counts, digits, regular expressions (``re.compile``), times,
   days and dates (:mod:`ivr.calendar`), templates, expressions
   (:mod:`ivr.expr`), prompt specs, languages;
3. cross-references: every node reference exists, ``start`` exists, the
   node-type invariants (``min_digits <= max_digits``, exactly one lookup
   source and one transfer target, CSV file and column exist);
4. prompts: each prompt name has a file under ``<prompt_dir>/<fallback>/``
   (error) and under each other listed language (warning);
5. graph: nodes unreachable from ``start``; cycles made only of
   pass-through nodes (``set``/``branch``/``goto``/``language``/``lookup``),
   found as strongly connected components (Tarjan), which would spin
   forever without waiting for the caller or a timer.
"""
from __future__ import annotations

import csv
import difflib
import pathlib
import re
from typing import Any

from ivr.calendar import HolidayCalendar, TimeRange, parse_days, parse_timezone
from ivr.errors import Problem
from ivr.expr import check_template, compile_expression
from ivr.flow import Flow, LineMap
from ivr.nodes import COMMON, FLOW_KEYS, MISSING, PASS_THROUGH, RULE_KEYS, SCHEMAS, KeySpec, Node
from ivr.prompts import PromptCatalog, PromptSpec, parse_prompts

_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DTMF = set("0123456789*#ABCD")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_NUMBER = re.compile(r"\+?[0-9*#]+")


class _Collector:
    def __init__(self, file: str, lines: LineMap) -> None:
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: tuple[Any, ...], reason: str) -> None:
        self.problems.append(Problem(self.file, self.lines.line(*path), reason))

    def warn(self, path: tuple[Any, ...], reason: str) -> None:
        self.warnings.append(Problem(self.file, self.lines.line(*path), reason))


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_value(kind: str, value: Any) -> Any:
    """Parse one value of ``kind``; raises ``ValueError`` with the reason."""
    if kind in ("node", "str", "name", "template", "language"):
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_show(value)}")
        if kind == "node" and not _ID.fullmatch(value):
            raise ValueError(f"must be a node id, not {value!r}")
        if kind == "name" and not _ID.fullmatch(value):
            raise ValueError(f"must be a name of letters, digits and _, not {value!r}")
        if kind == "template":
            bad = check_template(value)
            if bad:
                raise ValueError(bad)
        if kind == "language" and not _LANGUAGE.fullmatch(value):
            raise ValueError(f"must be a language code such as 'en' or 'pt-BR', not {value!r}")
        return value
    if kind == "duration":
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"must be a number of seconds > 0, not {_show(value)}")
        return float(value)
    if kind in ("count", "positive", "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {_show(value)}")
        if kind == "count" and value < 0:
            raise ValueError(f"must be >= 0, not {value}")
        if kind == "positive" and value < 1:
            raise ValueError(f"must be >= 1, not {value}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {_show(value)}")
        return value
    if kind == "digits":
        if not isinstance(value, str) or any(ch not in _DTMF for ch in value):
            raise ValueError(f"must be DTMF keys (0-9 * # A-D), not {_show(value)}")
        return value
    if kind == "regex":
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_show(value)}")
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
    if kind == "prompts":
        try:
            return parse_prompts(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    if kind in ("strlist", "days"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be a list of strings, not {_show(value)}")
        return parse_days(list(value)) if kind == "days" else tuple(value)
    if kind == "numbers":
        if not isinstance(value, str):
            raise ValueError(f"must be a string such as \"0612345678$0698765432\", not {_show(value)}")
        numbers = tuple(n.strip() for n in value.split("$"))
        for number in numbers:
            if not _NUMBER.fullmatch(number):
                raise ValueError(f"bad number {number!r} in {value!r} (digits, optional leading +, '$' between)")
        return numbers
    if kind == "timerange":
        if not isinstance(value, str):
            raise ValueError(f"must be a string \"HH:MM-HH:MM\", not {_show(value)}")
        return TimeRange.parse(value)
    if kind == "expression":
        if not isinstance(value, str):
            raise ValueError(f"must be a string expression, not {_show(value)}")
        try:
            return compile_expression(value)
        except SyntaxError as exc:
            raise ValueError(f"bad expression {value!r}: {exc.msg}") from None
        except ValueError as exc:
            raise ValueError(f"bad expression {value!r}: {exc}") from None
    raise AssertionError(f"unknown key kind {kind}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _parse_keys(c: _Collector, path: tuple[Any, ...], where: str, table: dict[str, Any],
                schema: dict[str, KeySpec], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in table.items():
        if key in skip:
            continue
        spec = schema.get(key)
        if spec is None:
            c.error((*path, key), f"{where}: unknown key {key!r}{_hint(key, list(schema))}")
            continue
        try:
            params[key] = _parse_value(spec.kind, value)
        except ValueError as exc:
            c.error((*path, key), f"{where}: {key!r} {exc}")
            params[key] = MISSING
    for key, spec in schema.items():
        if key in params or key in skip:
            continue
        if spec.required:
            c.error(path, f"{where}: missing required key {key!r}")
            params[key] = MISSING
        else:
            default = spec.default
            if spec.kind == "prompts" and default is not None:
                default = parse_prompts(list(default))
            params[key] = default
    return params


def _parse_choices(c: _Collector, path: tuple[Any, ...], where: str, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        c.error((*path, key), f"{where}: {key!r} must be a table of digit = \"node\"")
        return MISSING
    out: dict[str, str] = {}
    for digit, target in value.items():
        if len(digit) != 1 or digit not in _DTMF:
            c.error((*path, key, digit), f"{where}: {key!r} key {digit!r} is not one DTMF key (0-9 * # A-D)")
        elif not isinstance(target, str) or not _ID.fullmatch(target):
            c.error((*path, key, digit), f"{where}: {key!r} {digit!r} must name a node, not {_show(target)}")
        else:
            out[digit] = target
    return out


def _parse_variables(c: _Collector, path: tuple[Any, ...], where: str, value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        c.error((*path, "variables"), f"{where}: 'variables' must be a non-empty table of name = value")
        return MISSING
    out: dict[str, Any] = {}
    for name, raw in value.items():
        vpath = (*path, "variables", name)
        if not _ID.fullmatch(name):
            c.error(vpath, f"{where}: variable name {name!r} must be letters, digits and _")
            continue
        if isinstance(raw, str) and raw.startswith("="):
            try:
                out[name] = compile_expression(raw[1:])
            except SyntaxError as exc:
                c.error(vpath, f"{where}: variable {name!r}: bad expression {raw[1:].strip()!r}: {exc.msg}")
            except ValueError as exc:
                c.error(vpath, f"{where}: variable {name!r}: bad expression {raw[1:].strip()!r}: {exc}")
        elif isinstance(raw, str):
            bad = check_template(raw)
            if bad:
                c.error(vpath, f"{where}: variable {name!r}: {bad}")
            out[name] = raw
        elif isinstance(raw, bool | int | float):
            out[name] = raw
        else:
            c.error(vpath, f"{where}: variable {name!r} must be a string, number or boolean, not {_show(raw)}")
    return out


def _rule_label(rule: dict[str, Any]) -> str:
    parts = []
    for key in ("if", "caller_in", "caller_prefix", "dialed_in", "time", "days", "holiday"):
        if key in rule and rule[key] is not MISSING and rule[key] is not None:
            raw = rule["_raw"][key]
            if isinstance(raw, list):
                raw = ", ".join(str(r) for r in raw)
            elif isinstance(raw, bool):
                raw = "true" if raw else "false"
            parts.append(f"{key} {raw}" if key != "if" else str(raw))
    return ", ".join(parts) or "always"


def _parse_rules(c: _Collector, path: tuple[Any, ...], where: str, value: Any) -> Any:
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        c.error((*path, "rules"), f"{where}: 'rules' must be one or more [[...rules]] tables")
        return MISSING
    rules = []
    for index, raw in enumerate(value):
        rpath = (*path, "rules", index)
        rule = _parse_keys(c, rpath, f"{where} rule {index + 1}", raw, RULE_KEYS)
        rule["_raw"] = raw
        rule["label"] = _rule_label(rule)
        rules.append(rule)
    return rules


def _build_node(c: _Collector, node_id: str, table: Any) -> Node | None:
    path = ("nodes", node_id)
    if not _ID.fullmatch(node_id):
        c.error(path, f"node id {node_id!r} must be letters, digits and _ (not starting with a digit)")
        return None
    if not isinstance(table, dict):
        c.error(path, f"node {node_id!r} must be a table [nodes.{node_id}]")
        return None
    node_type = table.get("type")
    if node_type is None:
        c.error(path, f"node {node_id!r}: missing required key 'type'")
        return None
    if not isinstance(node_type, str) or node_type not in SCHEMAS:
        c.error((*path, "type"), f"node {node_id!r}: unknown node type {node_type!r}{_hint(str(node_type), list(SCHEMAS))}"
                f"; known types: {', '.join(SCHEMAS)}")
        return None
    where = f"node {node_id!r} ({node_type})"
    schema = {**COMMON, **SCHEMAS[node_type]}
    special = tuple(k for k in ("choices", "exits", "variables", "rules") if k in schema)
    params = _parse_keys(c, path, where, table, schema, skip=special)
    for key in special:
        if key not in table:
            spec = schema[key]
            if spec.required:
                c.error(path, f"{where}: missing required key {key!r}")
                params[key] = MISSING
            else:
                params[key] = dict(spec.default) if isinstance(spec.default, dict) else spec.default
        elif key in ("choices", "exits"):
            params[key] = _parse_choices(c, path, where, key, table[key])
        elif key == "variables":
            params[key] = _parse_variables(c, path, where, table[key])
        else:
            params[key] = _parse_rules(c, path, where, table[key])
    return Node(node_id, node_type, c.lines.line(*path), params)


def _edges(node: Node) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(label, target, key path) of every reference the node makes."""
    p = node.params
    out: list[tuple[str, str, tuple[Any, ...]]] = []

    def add(label: str, key: str, *sub: Any) -> None:
        target = p.get(key)
        if sub:
            target = target.get(sub[0]) if isinstance(target, dict) else None
        if isinstance(target, str):
            out.append((label, target, (key, *sub)))

    t = node.type
    if t in ("play", "set", "goto", "language"):
        add("", "next")
    elif t == "menu":
        for digit in (p.get("choices") or {}) if p.get("choices") is not MISSING else {}:
            add(digit, "choices", digit)
        add("invalid", "on_invalid")
        add("timeout", "on_timeout")
        add("failure", "on_failure")
    elif t == "collect":
        add("ok", "next")
        add("failure", "on_failure")
    elif t == "branch":
        rules = p.get("rules")
        if isinstance(rules, list):
            for index, rule in enumerate(rules):
                if isinstance(rule.get("next"), str):
                    out.append((rule["label"], rule["next"], ("rules", index, "next")))
        add("default", "default")
    elif t == "lookup":
        add("found", "found")
        add("not found", "not_found")
        add("error", "on_error")
    elif t == "queue":
        exits = p.get("exits")
        for digit in exits if isinstance(exits, dict) else {}:
            add(f"press {digit}", "exits", digit)
        add("timeout", "on_timeout")
        add("failure", "on_failure")
    elif t == "transfer":
        add("failure", "on_failure")
    elif t == "voicemail":
        add("done", "next")
    elif t == "survey":
        add("answered", "next")
        add("no answer", "on_failure")
    elif t == "callback":
        add("registered", "next")
        add("failure", "on_failure")
    return out


def _check_node(c: _Collector, node: Node, flow_languages: tuple[str, ...], base_dir: pathlib.Path) -> None:
    p = node.params
    path = ("nodes", node.id)
    where = f"node {node.id!r} ({node.type})"
    if node.type == "collect":
        lo, hi = p.get("min_digits"), p.get("max_digits")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            c.error((*path, "min_digits"), f"{where}: min_digits {lo} is greater than max_digits {hi}")
        if isinstance(p.get("terminator"), str) and len(p["terminator"]) > 1:
            c.error((*path, "terminator"), f"{where}: 'terminator' must be one key or \"\"")
    if node.type == "callback":
        lo, hi = p.get("min_digits"), p.get("max_digits")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            c.error((*path, "min_digits"), f"{where}: min_digits {lo} is greater than max_digits {hi}")
    if node.type == "survey" and p.get("digits") == "":
        c.error((*path, "digits"), f"{where}: 'digits' must list at least one key")
    if node.type == "menu" and p.get("choices") == {}:
        c.error((*path, "choices"), f"{where}: 'choices' must map at least one digit")
    if node.type == "language" and isinstance(p.get("language"), str) and flow_languages \
            and p["language"] not in flow_languages:
        c.error((*path, "language"), f"{where}: language {p['language']!r} is not in the flow's languages "
                f"{list(flow_languages)}")
    if node.type == "transfer":
        targets = [k for k in ("agent", "queue", "flow", "numbers") if p.get(k) is not None]
        if len(targets) != 1:
            c.error(path, f"{where}: needs exactly one of 'agent', 'queue', 'flow', 'numbers'"
                    + (f" (found {', '.join(targets)})" if targets else ""))
    if node.type == "lookup":
        sources = [k for k in ("csv", "table") if p.get(k) is not None]
        if len(sources) != 1:
            c.error(path, f"{where}: needs exactly one of 'csv' or 'table'"
                    + (" (found both)" if len(sources) == 2 else ""))
        elif sources == ["csv"] and isinstance(p["csv"], str):
            csv_path = (base_dir / p["csv"]).resolve()
            p["csv_path"] = csv_path
            if not csv_path.is_file():
                c.error((*path, "csv"), f"{where}: CSV file {p['csv']!r} not found (looked in {csv_path})")
            elif isinstance(p.get("column"), str):
                try:
                    with csv_path.open(newline="", encoding="utf-8") as fh:
                        header = next(csv.reader(fh), [])
                except (OSError, UnicodeDecodeError) as exc:
                    c.error((*path, "csv"), f"{where}: cannot read CSV file {p['csv']!r}: {exc}")
                else:
                    if p["column"] not in header:
                        c.error((*path, "column"), f"{where}: column {p['column']!r} not in {p['csv']!r} "
                                f"(columns: {', '.join(header)})")


def _prompt_specs(node: Node) -> list[tuple[str, PromptSpec]]:
    out: list[tuple[str, PromptSpec]] = []
    for key, spec in {**COMMON, **SCHEMAS[node.type]}.items():
        if spec.kind == "prompts" and isinstance(node.params.get(key), tuple):
            out.extend((key, s) for s in node.params[key])
    return out


def _check_prompts(c: _Collector, nodes: dict[str, Node], catalog: PromptCatalog,
                   languages: tuple[str, ...], fallback: str, prompt_dir: str) -> None:
    for node in nodes.values():
        for key, spec in _prompt_specs(node):
            kpath = ("nodes", node.id, key)
            if spec.kind != "file":
                bad = check_template(spec.value)
                if bad:
                    c.error(kpath, f"node {node.id!r} ({node.type}): {key!r} {bad}")
                continue
            if catalog.find(spec.value, fallback) is None:
                c.error(kpath, f"node {node.id!r} ({node.type}): prompt {spec.value!r} not found in "
                        f"{prompt_dir}/{fallback}/ (fallback language)")
                continue
            for lang in languages:
                if lang != fallback and catalog.find(spec.value, lang) is None:
                    c.warn(kpath, f"node {node.id!r} ({node.type}): prompt {spec.value!r} missing for "
                           f"language {lang!r}; callers hear the {fallback!r} file")


def _tarjan(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components, iterative (flows may be long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for succ in it:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def _check_graph(c: _Collector, nodes: dict[str, Node], start: str | None) -> None:
    for node in nodes.values():
        for label, target, key in _edges(node):
            if target not in nodes:
                c.error(("nodes", node.id, *key), f"node {node.id!r} ({node.type}): {key[0]!r} refers to "
                        f"unknown node {target!r}{_hint(target, list(nodes))}")
            else:
                node.edges.append((label, target))
    if start is None or start not in nodes:
        return
    seen = {start}
    todo = [start]
    while todo:
        for _, target in nodes[todo.pop()].edges:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    for node in nodes.values():
        if node.id not in seen:
            c.error(("nodes", node.id), f"node {node.id!r} ({node.type}) is unreachable from start {start!r}")
    passing = {n.id: [t for _, t in n.edges if nodes[t].type in PASS_THROUGH]
               for n in nodes.values() if n.type in PASS_THROUGH}
    for component in _tarjan(passing):
        if len(component) == 1 and component[0] not in passing[component[0]]:
            continue
        ordered = sorted(component, key=lambda n: nodes[n].line)
        cycle = _cycle_order(ordered[0], set(component), passing)
        c.error(("nodes", ordered[0]), "loop without input: " + " -> ".join(cycle + [cycle[0]])
                + " never waits for the caller, audio or a timer")


def _cycle_order(first: str, members: set[str], graph: dict[str, list[str]]) -> list[str]:
    # Shortest cycle through `first` inside the component, for a readable message.
    parents: dict[str, str] = {}
    frontier = [first]
    while frontier:
        nxt = []
        for node in frontier:
            for succ in graph[node]:
                if succ not in members:
                    continue
                if succ == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(parents[path[-1]])
                    return list(reversed(path))
                if succ not in parents:
                    parents[succ] = node
                    nxt.append(succ)
        frontier = nxt
    return [first]


def build_flow(doc: dict[str, Any], lines: LineMap, file: str, base_dir: pathlib.Path,
               prompt_root: pathlib.Path | None) -> tuple[Flow | None, list[Problem], list[Problem]]:
    """Validate a parsed flow document and build the :class:`Flow`.

    Returns ``(flow, errors, warnings)``; ``flow`` is None when there are errors.
    """
    c = _Collector(file, lines)
    for key in doc:
        if key not in ("flow", "nodes"):
            c.error((key,), f"unknown top-level table {key!r} (a flow has [flow] and [nodes.<id>] tables)")
    meta_raw = doc.get("flow")
    if not isinstance(meta_raw, dict):
        c.error(("flow",), "missing [flow] table (it names the start node)")
        meta = {key: spec.default for key, spec in FLOW_KEYS.items()}
    else:
        meta = _parse_keys(c, ("flow",), "[flow]", meta_raw, FLOW_KEYS)
        # a bad value was reported; go on checking with the default
        meta = {k: (None if FLOW_KEYS[k].required else FLOW_KEYS[k].default) if v is MISSING else v
                for k, v in meta.items()}
    nodes_raw = doc.get("nodes")
    nodes: dict[str, Node] = {}
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        c.error(("nodes",), "no nodes: add at least one [nodes.<id>] table")
        nodes_raw = {}
    for node_id, table in nodes_raw.items():
        node = _build_node(c, node_id, table)
        if node is not None:
            nodes[node_id] = node

    fallback = meta.get("fallback_language") or "en"
    languages = meta.get("languages") or ()
    if languages is MISSING:
        languages = ()
    for lang in languages:
        if not _LANGUAGE.fullmatch(lang):
            c.error(("flow", "languages"), f"[flow]: language code {lang!r} is not like 'en' or 'pt-BR'")
    if languages and fallback not in languages:
        c.error(("flow", "fallback_language"), f"[flow]: fallback_language {fallback!r} is not in languages "
                f"{list(languages)}")
    language = meta.get("language") or fallback
    if language is not MISSING and languages and language not in languages:
        c.error(("flow", "language"), f"[flow]: language {language!r} is not in languages {list(languages)}")
    try:
        zone = parse_timezone(meta.get("timezone") or "UTC")
    except ValueError as exc:
        c.error(("flow", "timezone"), f"[flow]: {exc}")
        zone = parse_timezone("UTC")
    holidays = HolidayCalendar()
    for entry in meta.get("holidays") or ():
        try:
            holidays.add(entry)
        except ValueError as exc:
            c.error(("flow", "holidays"), f"[flow]: holidays: {exc}")

    for node in nodes.values():
        _check_node(c, node, tuple(languages), base_dir)
    start = meta.get("start")
    if isinstance(start, str) and nodes and start not in nodes:
        c.error(("flow", "start"), f"[flow]: start node {start!r} does not exist{_hint(start, list(nodes))}")
    _check_graph(c, nodes, start if isinstance(start, str) else None)

    prompt_dir_text = meta.get("prompt_dir") or "prompts"
    root = prompt_root if prompt_root is not None else base_dir / prompt_dir_text
    catalog = PromptCatalog(root.resolve(), fallback)
    shown_dir = str(prompt_root) if prompt_root is not None else prompt_dir_text
    _check_prompts(c, nodes, catalog, tuple(languages), fallback, shown_dir)

    if c.problems or not isinstance(start, str):
        return None, c.problems, c.warnings
    name = meta.get("name") or pathlib.Path(file).stem
    flow = Flow(name=name, file=file, start=start, nodes=nodes, languages=tuple(languages) or (fallback,),
                language=language, fallback_language=fallback, catalog=catalog, timezone=zone,
                holidays=holidays, tenant=meta.get("tenant") or "default", base_dir=base_dir)
    return flow, c.problems, c.warnings
