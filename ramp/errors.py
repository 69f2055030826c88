"""The one exception type for mistakes a user can fix (a missing file, a bad config value, an unreachable
server). The ``ramp`` command prints them as one line, ``error: …``, and exits with code 2; anything else
is a bug and keeps its traceback. Messages name the file, key or value and say what to do."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the command line, the config or the inputs; the message says how to fix it."""
