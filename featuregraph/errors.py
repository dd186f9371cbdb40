"""The one error family featuregraph raises on purpose.

Every message is a single line that names the problem and, where it helps, the fix.
The CLI prints it without a traceback; anything else escaping is a bug.
"""


class FeaturegraphError(Exception):
    """Base class: a user-facing, one-line explanation of what went wrong."""


class InputError(FeaturegraphError):
    """Bad user input: prompts, options, files."""


class LoadError(FeaturegraphError):
    """A model or SAE could not be loaded, or they do not fit together."""


class DatabaseError(FeaturegraphError):
    """The database is unreadable, from a newer schema, locked, or a statement failed."""
