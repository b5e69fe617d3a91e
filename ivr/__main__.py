"""``python -m ivr draw FLOW`` / ``python -m ivr check PATH...``."""
import sys

from ivr.cli import main

sys.exit(main())
