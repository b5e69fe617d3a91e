"""Switch a pure-Python module of ``sip/`` to its compiled twin.

``sip/_message.pyx``, ``_uri.pyx`` and ``_grammar.pyx`` ``include`` the
``.py`` source verbatim, so the compiled module and the pure one are the same
code.  At the end of each ``.py`` module, :func:`swap_in` replaces the
module's names by the compiled ones unless ``CTIENGINE_PUREPYTHON`` forces
the pure code (the switch of ``engine.purepython``, read here because
``sip/`` does not import ``engine/``), the twin is not built, or the ``.py``
is newer than the build (stale compiled code is never run; ``make build``).
"""

import importlib
import logging
import os

__all__ = ["swap_in"]


def swap_in(namespace: dict, compiled_name: str) -> bool:
    """Replace the public and private names of *namespace* by those of *compiled_name*.

    Args:
        namespace: the calling module's ``globals()``.
        compiled_name: e.g. ``"sip._message"``.

    Returns:
        True when the compiled twin is now in use.
    """
    if os.environ.get("CTIENGINE_PUREPYTHON", "") not in ("", "0"):
        return False
    try:
        compiled = importlib.import_module(compiled_name)
    except ImportError:  # not built: the pure code stays
        return False
    source = namespace["__file__"]
    if os.path.getmtime(source) > os.path.getmtime(compiled.__file__):
        logging.getLogger(namespace["__name__"]).warning(
            "%s is newer than %s: using the pure-Python code; run make build", source, compiled.__file__
        )
        return False
    namespace.update({k: v for k, v in vars(compiled).items() if not k.startswith("__")})
    return True
