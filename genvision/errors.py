"""Errors that reach the user as one line on stderr, never as a traceback.

`cli.main` catches `GenvisionError` and exits with its `exit_code`: 2 for bad input (usage errors), 3 for a run
stopped because training diverged. Library code raises these with a message that names the bad value and what was
expected, e.g. ``--batch-size must be > 0, got -4``.
"""


class GenvisionError(Exception):
    """Base class: a message for the user and a process exit code."""

    exit_code = 1


class UsageError(GenvisionError, ValueError):
    """Bad input from the user: a flag, a path, a file's contents. Exit code 2."""

    exit_code = 2


class TrainingDiverged(GenvisionError):
    """A loss became non-finite; the run stopped without writing a non-finite checkpoint. Exit code 3."""

    exit_code = 3
