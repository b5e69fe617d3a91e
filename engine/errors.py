"""Errors of the ``engine`` package and their one mapping to control-socket codes.

Every exception an op handler can raise derives from :class:`EngineError` and
carries a ``code`` (the string a control client sees in ``error.code``).  The
control server calls :func:`error_reply` and nothing else, so the mapping lives
here, in one place; an exception that is not an ``EngineError`` is our bug and
becomes ``internal`` (logged with its traceback, never shown to the client).

Codes (documented in ``docs/control.md``):

==================  ======================================================
``bad_request``     the frame is a map but not a request (no ``id``/``op``)
``invalid_args``    an argument is missing, unknown, or of the wrong type
``unknown_op``      no op of that name is registered
``unauthorized``    the connection has not authenticated (or auth failed)
``forbidden``       the role or data scope of the user does not allow it
``not_found``       the named agent, call, queue ... does not exist
``conflict``        the object is in a state that does not allow the op
``invalid_state``   the op needs the object in another state (agent not on a call)
``busy``            a resource limit (queue length, store backlog) was hit
``unavailable``     a service the op needs is not running
``frame_too_large`` a frame exceeded the maximum size (connection closed)
``malformed_frame`` undecodable msgpack bytes (connection closed)
``slow_consumer``   the client did not read its events (connection closed)
``internal``        a bug in the engine; the message is generic
==================  ======================================================
"""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


class EngineError(Exception):
    """Base of every engine error that maps to a control-socket code."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(EngineError):
    code = "bad_request"


class InvalidArgs(EngineError, ValueError):
    code = "invalid_args"


class UnknownOp(EngineError):
    code = "unknown_op"


class Unauthorized(EngineError):
    code = "unauthorized"


class Forbidden(EngineError):
    code = "forbidden"


class NotFound(EngineError, LookupError):
    code = "not_found"


class Conflict(EngineError):
    code = "conflict"


class InvalidState(Conflict):
    """The op needs its object in another state (retrieve a call not on hold, a supervisor op on an
    agent not on a call): a kind of ``conflict`` with its own code."""

    code = "invalid_state"


class Busy(EngineError):
    code = "busy"


class Unavailable(EngineError):
    code = "unavailable"


class ProtocolViolation(EngineError):
    """The byte stream itself is broken; the connection must be closed."""

    code = "malformed_frame"


class FrameTooLarge(ProtocolViolation):
    code = "frame_too_large"


class SlowConsumer(ProtocolViolation):
    code = "slow_consumer"


class ConfigError(Exception):
    """The configuration file is invalid.

    ``errors`` holds every problem as one line ``FILE:LINE: key.path: reason``;
    ``str()`` joins them with newlines.
    """

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class StoreError(Exception):
    """The store cannot be opened or migrated (corrupt file, newer schema)."""


class BackupError(StoreError):
    """A backup cannot be written, or a backup is refused on restore (checksum
    mismatch, newer schema, the target store in use or existing without force)."""


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The ``error`` map for a reply: ``{"code": ..., "message": ...}``.

    Engine errors keep their message; anything else is logged as a bug and
    answered with a generic ``internal`` error so no internals leak.
    """
    if isinstance(exc, EngineError):
        return {"code": exc.code, "message": exc.message}
    logger.error("internal error while handling a control request", exc_info=exc)
    return {"code": "internal", "message": f"internal error ({type(exc).__name__})"}
