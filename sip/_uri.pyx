# cython: language_level=3, embedsignature=True
# Compiled build of sip/uri.py, included verbatim (see sip/_message.pyx).
include "uri.py"
