"""The base of every error Foldwise reports to a person.

A `FoldwiseError` says what was wrong and what to do in its message. The command line prints it
as one `error: ...` line, and the run record keeps the same line: no traceback, since it is not
a bug. Any other exception is a bug or an outage and keeps its traceback.
"""


class FoldwiseError(Exception):
    """An error the user can act on; its message is the whole story."""
