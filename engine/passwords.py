"""Password hashes for agents and control-socket users: scrypt (RFC 7914).

The configuration stores only hashes, never passwords.  A hash is one string
that carries its own parameters, so the cost can be raised later without
invalidating old entries::

    scrypt$n=16384,r=8,p=1$<salt, base64>$<key, base64>

``n`` must be a power of two of at least 2**10 (cheap hashes are accepted so
test configurations stay fast; production hashes from ``ctiengine passwd`` use
2**14).  Verification compares with :func:`hmac.compare_digest`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
MIN_N = 2**10
KEY_BYTES = 32
SALT_BYTES = 16

_FORMAT = re.compile(
    r"^scrypt\$n=(?P<n>\d+),r=(?P<r>\d+),p=(?P<p>\d+)\$(?P<salt>[A-Za-z0-9+/=]+)\$(?P<key>[A-Za-z0-9+/=]+)$"
)


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P,
                  salt: bytes | None = None) -> str:
    """Hash ``password`` with a fresh random salt; returns the encoded string."""
    if n < MIN_N or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two >= {MIN_N}, got {n}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    key = _derive(password, salt, n, r, p)
    return (f"scrypt$n={n},r={r},p={p}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}")


def check_hash_format(encoded: str) -> str | None:
    """``None`` when ``encoded`` is a well-formed hash, else the reason it is not."""
    m = _FORMAT.match(encoded)
    if not m:
        return "not a scrypt hash (expected 'scrypt$n=N,r=R,p=P$SALT$KEY'; make one with 'ctiengine passwd')"
    n, r, p = int(m["n"]), int(m["r"]), int(m["p"])
    if n < MIN_N or n & (n - 1):
        return f"scrypt n must be a power of two >= {MIN_N}, got {n}"
    if not 1 <= r <= 64 or not 1 <= p <= 16:
        return f"scrypt r/p out of range (r={r}, p={p})"
    try:
        key = base64.b64decode(m["key"], validate=True)
        base64.b64decode(m["salt"], validate=True)
    except ValueError:
        return "scrypt hash has invalid base64"
    if len(key) < 16:
        return "scrypt key is shorter than 16 bytes"
    return None


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; False for a malformed hash.

    CPU-heavy (tens of milliseconds): call it from a worker thread when on the
    event loop.
    """
    m = _FORMAT.match(encoded)
    if not m or check_hash_format(encoded) is not None:
        return False
    salt = base64.b64decode(m["salt"])
    expected = base64.b64decode(m["key"])
    key = _derive(password, salt, int(m["n"]), int(m["r"]), int(m["p"]), len(expected))
    return hmac.compare_digest(key, expected)


def _derive(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = KEY_BYTES) -> bytes:
    # maxmem: scrypt needs 128 * r * n bytes plus slack.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * r * n + 2**20, dklen=dklen)
