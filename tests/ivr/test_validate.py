"""The validator: one bad flow per error kind, exact ``file:line: reason``."""
from __future__ import annotations

import pathlib

import pytest

from ivr.errors import FlowError
from ivr.flow import LineMap, check_flow, load_flow
from ivr_helpers import write_flow

HEAD = """[flow]
start = "a"
"""


def problems(tmp_path: pathlib.Path, text: str, prompts=(), languages=("en",)) -> list[str]:
    path = write_flow(tmp_path, text, prompts, languages)
    errors, _ = check_flow(path)
    return [str(e).replace(str(tmp_path) + "/", "") for e in errors]


def test_toml_syntax_error(tmp_path):
    assert problems(tmp_path, HEAD + "[nodes.a]\ntype = \"hangup\"\nreason = \n") == [
        "flow.toml:5: TOML syntax error: Invalid value"]


def test_unknown_node_type(tmp_path):
    assert problems(tmp_path, HEAD + "\n[nodes.a]\ntype = \"menus\"\n") == [
        "flow.toml:5: node 'a': unknown node type 'menus' (did you mean 'menu'?); known types: play, menu, "
        "collect, set, branch, lookup, queue, transfer, voicemail, survey, callback, language, hangup, goto"]


def test_unknown_key_with_hint(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "hangup"
reson = "x"
""") == ["flow.toml:6: node 'a' (hangup): unknown key 'reson' (did you mean 'reason'?)"]


def test_missing_required_keys_all_reported(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "collect"
prompts = [{tts = "x"}]
""") == ["flow.toml:4: node 'a' (collect): missing required key 'next'",
         "flow.toml:4: node 'a' (collect): missing required key 'on_failure'",
         "flow.toml:4: node 'a' (collect): missing required key 'variable'"]


def test_unknown_node_reference(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "menu"
prompts = [{tts = "x"}]
choices = { "1" = "salse", "2" = "sales" }
on_failure = "sales"

[nodes.sales]
type = "hangup"
""") == ["flow.toml:7: node 'a' (menu): 'choices' refers to unknown node 'salse' (did you mean 'sales'?)"]


def test_unknown_start_node(tmp_path):
    assert problems(tmp_path, """[flow]
start = "welcom"

[nodes.welcome]
type = "hangup"
""") == ["flow.toml:2: [flow]: start node 'welcom' does not exist (did you mean 'welcome'?)"]


def test_unreachable_node(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "hangup"

[nodes.old_menu]
type = "goto"
next = "a"
""") == ["flow.toml:7: node 'old_menu' (goto) is unreachable from start 'a'"]


def test_missing_prompt_file_and_language_warning(tmp_path):
    text = """[flow]
start = "a"
languages = ["en", "fr"]

[nodes.a]
type = "play"
prompts = ["welcome", "closed"]
next = "b"

[nodes.b]
type = "hangup"
"""
    path = write_flow(tmp_path, text, ["welcome"], ["en"])
    errors, warnings = check_flow(path)
    assert [str(e) for e in errors] == [
        f"{path}:7: node 'a' (play): prompt 'closed' not found in prompts/en/ (fallback language)"]
    (tmp_path / "prompts" / "en" / "closed.wav").write_bytes((tmp_path / "prompts" / "en" / "welcome.wav").read_bytes())
    flow = load_flow(path)
    assert [str(w) for w in flow.warnings] == [
        f"{path}:7: node 'a' (play): prompt 'closed' missing for language 'fr'; callers hear the 'en' file",
        f"{path}:7: node 'a' (play): prompt 'welcome' missing for language 'fr'; callers hear the 'en' file"]


def test_bad_regex(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "collect"
prompts = [{tts = "x"}]
variable = "v"
pattern = "[0-9"
next = "b"
on_failure = "b"

[nodes.b]
type = "hangup"
""") == ["flow.toml:8: node 'a' (collect): 'pattern' bad regular expression '[0-9': "
         "unterminated character set at position 0"]


def test_bad_times_days_dates_and_zone(tmp_path):
    assert problems(tmp_path, """[flow]
start = "a"
timezone = "Europe/Pariss"
holidays = ["2026-02-30"]

[nodes.a]
type = "branch"
default = "b"

[[nodes.a.rules]]
time = "25:00-18:00"
next = "b"

[[nodes.a.rules]]
days = ["monday"]
next = "b"

[nodes.b]
type = "hangup"
""") == [
        "flow.toml:3: [flow]: unknown time zone 'Europe/Pariss' (use an IANA name such as 'Europe/Paris')",
        "flow.toml:4: [flow]: holidays: bad date '2026-02-30' (day is out of range for month)",
        "flow.toml:11: node 'a' (branch) rule 1: 'time' bad time '25:00' (hours 00-24, minutes 00-59)",
        "flow.toml:15: node 'a' (branch) rule 2: 'days' bad day 'monday' (use mon, tue, wed, thu, fri, sat, sun)",
    ]


def test_loop_without_input(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "set"
variables = { n = "= n + 1" }
next = "check"

[nodes.check]
type = "branch"
default = "a"
[[nodes.check.rules]]
if = "n > 3"
next = "again"

[nodes.again]
type = "goto"
next = "a"
""") == ["flow.toml:4: loop without input: a -> check -> a never waits for the caller, audio or a timer"]


def test_loop_through_a_menu_is_fine(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "menu"
prompts = [{tts = "x"}]
choices = { "9" = "again" }
on_failure = "b"

[nodes.again]
type = "goto"
next = "a"

[nodes.b]
type = "hangup"
""") == []


def test_self_loop_without_input(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "goto"
next = "a"
""") == ["flow.toml:4: loop without input: a -> a never waits for the caller, audio or a timer"]


def test_value_kinds(tmp_path):
    assert problems(tmp_path, HEAD + """
[nodes.a]
type = "collect"
prompts = [{tts = "Hi {name"}]
variable = "2bad"
min_digits = 0
max_digits = "4"
first_digit_timeout_s = -1
terminator = "x"
barge_in = "yes"
next = "b"
on_failure = "b"

[nodes.b]
type = "hangup"
""") == [
        "flow.toml:6: node 'a' (collect): 'prompts' template 'Hi {name' has a stray brace "
        "(write {name}, or {{ for a literal brace)",
        "flow.toml:7: node 'a' (collect): 'variable' must be a name of letters, digits and _, not '2bad'",
        "flow.toml:8: node 'a' (collect): 'min_digits' must be >= 1, not 0",
        "flow.toml:9: node 'a' (collect): 'max_digits' must be a whole number, not '4'",
        "flow.toml:10: node 'a' (collect): 'first_digit_timeout_s' must be a number of seconds > 0, not -1",
        "flow.toml:11: node 'a' (collect): 'terminator' must be DTMF keys (0-9 * # A-D), not 'x'",
        "flow.toml:12: node 'a' (collect): 'barge_in' must be true or false, not 'yes'",
    ]


def test_node_invariants(tmp_path):
    (tmp_path / "rates.csv").write_text("code,rate\n1,2\n")
    assert problems(tmp_path, """[flow]
start = "a"
languages = ["en", "fr"]

[nodes.a]
type = "collect"
prompts = [{tts = "x"}]
variable = "v"
min_digits = 5
max_digits = 4
next = "t"
on_failure = "t"

[nodes.t]
type = "transfer"
numbers = "0611$06-12"
agent = "1001"
on_failure = "l"

[nodes.l]
type = "lookup"
csv = "rates.csv"
column = "country"
key = "{v}"
into = "r"
found = "l2"
not_found = "l2"

[nodes.l2]
type = "lookup"
csv = "missing.csv"
table = "accounts"
column = "x"
key = "{v}"
into = "r"
found = "de"
not_found = "de"

[nodes.de]
type = "language"
language = "de"
next = "s"

[nodes.s]
type = "set"
variables = { x = "= import os" }
next = "z"

[nodes.z]
type = "hangup"
""") == [
        "flow.toml:9: node 'a' (collect): min_digits 5 is greater than max_digits 4",
        "flow.toml:14: node 't' (transfer): needs exactly one of 'agent', 'queue', 'flow', 'numbers' (found agent, numbers)",
        "flow.toml:16: node 't' (transfer): 'numbers' bad number '06-12' in '0611$06-12' "
        "(digits, optional leading +, '$' between)",
        "flow.toml:23: node 'l' (lookup): column 'country' not in 'rates.csv' (columns: code, rate)",
        "flow.toml:29: node 'l2' (lookup): needs exactly one of 'csv' or 'table' (found both)",
        "flow.toml:41: node 'de' (language): language 'de' is not in the flow's languages ['en', 'fr']",
        "flow.toml:46: node 's' (set): variable 'x': bad expression 'import os': invalid syntax",
    ]


def test_missing_flow_table_and_no_nodes(tmp_path):
    assert problems(tmp_path, "title = 'x'\n") == [
        "flow.toml:1: missing [flow] table (it names the start node)",
        "flow.toml:1: no nodes: add at least one [nodes.<id>] table",
        "flow.toml:1: unknown top-level table 'title' (a flow has [flow] and [nodes.<id>] tables)",
    ]


def test_all_errors_reported_at_once_and_raised_as_flow_error(tmp_path):
    path = write_flow(tmp_path, HEAD + """
[nodes.a]
type = "menu"
prompts = ["nope"]
choices = { "1" = "ghost" }
on_failure = "a"
timeout_s = 0

[nodes.lost]
type = "hangup"
""")
    with pytest.raises(FlowError) as info:
        load_flow(path)
    lines = str(info.value).replace(str(tmp_path) + "/", "").splitlines()
    assert lines == [
        "flow.toml:6: node 'a' (menu): prompt 'nope' not found in prompts/en/ (fallback language)",
        "flow.toml:7: node 'a' (menu): 'choices' refers to unknown node 'ghost' (did you mean 'lost'?)",
        "flow.toml:9: node 'a' (menu): 'timeout_s' must be a number of seconds > 0, not 0",
        "flow.toml:11: node 'lost' (hangup) is unreachable from start 'a'",
    ]
    assert len(info.value.problems) == 4


def test_line_map_handles_quotes_dotted_keys_arrays_and_multiline_strings():
    text = '''# comment
[flow]
start = "a"
[nodes.a]
description = """
x = 1
"""
type = "branch"
"dotted".key = 1
[[nodes.a.rules]]
next = "b"
[[nodes.a.rules]]
if = "x"
next = "c"
choices = { "1" = "x", '2' = "y" }
'''
    lines = LineMap(text)
    assert lines.line("flow", "start") == 3
    assert lines.line("nodes", "a") == 4
    assert lines.line("nodes", "a", "type") == 8       # the multi-line string was skipped
    assert lines.line("nodes", "a", "dotted", "key") == 9
    assert lines.line("nodes", "a", "rules", 0, "next") == 11
    assert lines.line("nodes", "a", "rules", 1, "next") == 14
    assert lines.line("nodes", "a", "rules", 1, "choices", "2") == 15
    assert lines.line("nodes", "a", "rules", 1, "unknown") == 12
    assert lines.line("nowhere") == 1


def test_bad_flow_values_are_reported_not_crashing(tmp_path):
    assert problems(tmp_path, """[flow]
start = 0
prompt_dir = 1
fallback_language = []
languages = "en"

[nodes.a]
type = "hangup"
""") == [
        "flow.toml:2: [flow]: 'start' must be a string, not 0",
        "flow.toml:3: [flow]: 'prompt_dir' must be a string, not 1",
        "flow.toml:4: [flow]: 'fallback_language' must be a string, not a list",
    ]
