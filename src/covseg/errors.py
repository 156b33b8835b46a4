"""The one exception type covseg raises for bad input (the CLI prints its message on one line),
and the wording its messages share."""


class CovsegError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


def counted(count: int, noun: str, plural: str = "") -> str:
    """``count`` and ``noun`` in the number it takes: "1 epoch", "2 epochs", "0 studies"
    (``plural`` where adding an s is not it)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def them(count: int) -> str:
    """The pronoun for ``count`` things a message has named: "it" for one, "them" for more."""
    return "it" if count == 1 else "them"
