"""The one error type every parser raises on bad input (docs/testing.md: counted, never a
crash)."""


class MalformedPacket(ValueError):
    """A frame or message failing a bounds or consistency check; the caller counts and drops it."""
