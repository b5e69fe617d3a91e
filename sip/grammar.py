"""Lexical pieces of the SIP grammar (RFC 3261 §25.1) shared by the parsers.

Theory of operation
-------------------
The message parser (:mod:`sip.message`) splits header lines eagerly and parses
structured values lazily; the functions here do the lexical work for those
lazy parsers: comma splitting that respects quoted strings and ``<...>``,
generic ``;name=value`` parameter lists, quoted-string (un)escaping and token
checks.  Each regex carries the ABNF it implements.  Nothing here allocates
messages or knows header semantics.
"""

import re

from sip.errors import RemoteProtocolError

__all__ = [
    "TOKEN_RE",
    "is_token",
    "split_commas",
    "parse_params",
    "format_params",
    "parse_quoted",
    "quote",
    "unquote",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~")

# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string
# (LWS allowed around ';' and '=').  Values of the host form include ':' '[' ']'.
_PARAM_RE = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]++)"
    r"(?:[ \t]*=[ \t]*(\"(?:[^\"\\]|\\[\s\S])*\"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?(?![ \t]*=)[ \t]*"
)
_PARAMS_FAST_RE = re.compile(
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]++)?)+\Z"
)
_PARAM_NAME_RE = re.compile(r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=")
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
_QUOTED_RE = re.compile(r'"([^"\\]*(?:\\[\s\S][^"\\]*)*)"')
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QUOTED_PAIR_RE = re.compile(r"\\([\s\S])")


def is_token(text: str) -> bool:
    """True if *text* is a non-empty RFC 3261 ``token``."""
    return bool(text) and _TOKEN_CHARS.issuperset(text)


def split_commas(value: str, where: str = "header") -> list[str]:
    """Split a list header value on commas outside quoted strings and ``<>``.

    Empty elements (``a,,b`` or a trailing comma) are a syntax error: RFC 3261
    §7.3.1 lists are ``element *(COMMA element)`` (RFC 4475 §3.1.2.1).

    Raises:
        RemoteProtocolError: empty element or unterminated quoted string.
    """
    if "," not in value:
        return [value]
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise RemoteProtocolError(f"{where}: unterminated quoted string")
    parts.append(value[start:].strip())
    if any(not p for p in parts):
        raise RemoteProtocolError(f"{where}: empty element in comma-separated list")
    return parts


def parse_params(text: str, where: str = "header") -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` into an ordered dict.

    *text* starts at the first ``;`` (or is empty).  Names keep their case as
    received; quoted values keep their quotes (use :func:`unquote`).

    Raises:
        RemoteProtocolError: an empty or malformed parameter (``;;``, ``;=x``).
    """
    params: dict[str, str | None] = {}
    if _PARAMS_FAST_RE.match(text) is not None:
        # Common case: no LWS, no quoted values -- a split does it.
        for item in text[1:].split(";"):
            name, sep, value = item.partition("=")
            params[name] = value if sep else None
        return params
    pos = 0
    n = len(text)
    match = _PARAM_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].strip()
            name = _PARAM_NAME_RE.match(text, pos)
            if name is not None:
                raise RemoteProtocolError(f"{where}: parameter {name.group(1)!r} has an empty or malformed value")
            raise RemoteProtocolError(f"{where}: malformed parameter list at {bad[:40]!r}")
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Inverse of :func:`parse_params`: ``;a=b;c``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_quoted(text: str, pos: int, where: str = "header") -> tuple[str, int]:
    """Read a quoted-string starting at ``text[pos] == '"'``.

    Returns:
        (unescaped content, index just past the closing quote).

    Raises:
        RemoteProtocolError: unterminated quoted string (RFC 4475 §3.1.2.6).
    """
    m = _QUOTED_RE.match(text, pos)
    if m is None:
        raise RemoteProtocolError(f"{where}: unterminated quoted string")
    inner = m.group(1)
    if "\\" in inner:
        inner = _QUOTED_PAIR_RE.sub(r"\1", inner)
    return inner, m.end()


def quote(text: str) -> str:
    """Make a quoted-string, escaping ``"`` and ``\\`` (RFC 3261 §25.1)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(value: str | None) -> str | None:
    """Strip quotes and quoted-pair escapes from a parameter value; other values pass."""
    if value is None or len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    return _QUOTED_PAIR_RE.sub(r"\1", inner)


# Compiled twin (sip/_grammar.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.grammar":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._grammar")
