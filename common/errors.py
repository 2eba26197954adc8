"""User-facing input errors.

Raise :class:`InputError` for anything a user can fix (a bad path, field or value). The
``lraee`` command line prints its message as one line and exits with status 2. Messages
name the file, the field and the allowed values.
"""


class InputError(ValueError):
    """Bad user input; ``str(err)`` is a complete one-line message."""
