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
