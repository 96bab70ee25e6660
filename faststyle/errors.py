"""The one error type for problems a user can cause and fix."""


class FaststyleError(Exception):
    """A user-facing error whose message says what to do about it."""
