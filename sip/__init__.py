"""ctiengine's own SIP stack (RFC 3261 and friends), sans-IO except ``transport``."""
