"""One switch for every Cython module: ``CTIENGINE_PUREPYTHON=1`` forces the
pure-Python twins, so the suite can run against both (msgpack's
``MSGPACK_PUREPYTHON`` convention)."""
import os


def pure_python_forced() -> bool:
    """True when the environment asks for the pure-Python twins."""
    return os.environ.get("CTIENGINE_PUREPYTHON", "") not in ("", "0")
