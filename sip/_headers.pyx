# cython: language_level=3, embedsignature=True
# Compiled build of sip/headers.py, included verbatim (see sip/compiled.py).
include "headers.py"
