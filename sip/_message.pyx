# cython: language_level=3, embedsignature=True
# Compiled build of sip/message.py.  The source is included verbatim, so the
# compiled module and its pure-Python twin cannot drift apart; sip/message.py
# swaps in these compiled names unless CTIENGINE_PUREPYTHON is set.  Measured
# in docs/performance/sip-parser.md.
include "message.py"
