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


class DatabaseLockedError(DatabaseError):
    """Another process holds a lock on the database file that this connection conflicts with
    (DuckDB allows one writer, or any number of readers), and it was not released in time."""


class NotFoundError(FeaturegraphError):
    """A run, prompt or feature asked for is not in the database."""


class QueryTimeoutError(FeaturegraphError):
    """A query ran past its time limit and was stopped."""


class ReadOnlyError(FeaturegraphError):
    """A statement that would change something was refused by a read-only entry point."""
