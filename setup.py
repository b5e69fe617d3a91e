"""Build every ``.pyx`` in the four packages as a C extension.

Each compiled module ``pkg/_name.pyx`` has a pure-Python twin ``pkg/name.py``
with the same API; the twin is used when the extension is not built or when
``CTIENGINE_PUREPYTHON=1`` is set, so a missing compiler never breaks the
engine, only slows it.  Set ``CTIENGINE_ANNOTATE=1`` for Cython HTML annotation.
"""
import os
from glob import glob

from setuptools import Extension, setup

PACKAGES = ("sip", "media", "ivr", "engine")


def extensions() -> list:
    try:
        from Cython.Build import cythonize
        import numpy
    except ImportError:  # no build deps: pure-Python twins only
        return []
    exts = []
    for pkg in PACKAGES:
        for pyx in sorted(glob(os.path.join(pkg, "*.pyx"))):
            name = pyx[:-4].replace(os.sep, ".")
            exts.append(
                Extension(
                    name,
                    [pyx],
                    include_dirs=[numpy.get_include()],
                    extra_compile_args=["-O3"],
                    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                )
            )
    return cythonize(
        exts,
        compiler_directives={"language_level": 3, "embedsignature": True},
        annotate=bool(os.environ.get("CTIENGINE_ANNOTATE")),
        nthreads=2,
    )


setup(ext_modules=extensions())
