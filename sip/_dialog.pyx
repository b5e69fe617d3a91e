# cython: language_level=3, embedsignature=True
# Compiled build of sip/dialog.py, included verbatim (see sip/compiled.py): the
# compiled module and its pure-Python twin cannot drift apart.  Measured in
# docs/performance/sip.md.
include "dialog.py"
