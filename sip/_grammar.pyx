# cython: language_level=3, embedsignature=True
# Compiled build of sip/grammar.py, included verbatim (see sip/_message.pyx).
include "grammar.py"
