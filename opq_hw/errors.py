"""The one exception type users see: it names the problem and the fix."""


class OpqError(Exception):
    """A user-facing error. The message says what is wrong and how to fix it."""
