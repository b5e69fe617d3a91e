"""ctiengine's call-centre core: calls, agents, routing, the ACD, the control
socket, the store and the CLI.  Depends on ``sip``, ``media`` and ``ivr``;
nothing depends back on it."""

__version__ = "0.1.0"
