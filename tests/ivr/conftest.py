"""IVR fixtures (helpers live in ivr_helpers.py so test files can import them)."""
from ivr_helpers import flow_from  # noqa: F401  (fixture)
