"""The one exception type covseg raises for bad input: the CLI prints its message on one line."""


class CovsegError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""
