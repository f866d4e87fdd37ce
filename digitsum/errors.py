"""Errors a user can fix: each message says what is wrong and how to fix it (the CLI exits 2)."""


class UsageError(ValueError):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(UsageError):
    """A bad config key or value; the message names the key and what is allowed."""


class DataError(UsageError):
    """Bad data or a bad data request; the message says what is wrong and how to fix it."""


def shown(value: object, limit: int = 40) -> str:
    """A user's value for a one-line message: its repr, cut where it is long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def one_line(message: str) -> str:
    """A message as one line of text: a control character from the user's input (a newline in a spec's
    key, an escape sequence) is shown escaped, so it can neither break the line nor act on a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def warning_line(message: Warning | str, category: type[Warning]) -> str:
    """A library's warning (Optuna's, torch's) as one line, not Python's two with a source line."""
    return f"warning: {one_line(' '.join(str(message).split()))[:300]} ({category.__name__})"
