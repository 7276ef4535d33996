"""The one exception type whose message a user sees as a single line (bad input, missing data, bad state)."""


class DynbenchError(Exception):
    """A user-facing error: its message says what went wrong and what to do."""
