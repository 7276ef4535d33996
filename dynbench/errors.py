"""The one exception type whose message a user sees as a single line (bad input, missing data, bad state)."""


class DynbenchError(Exception):
    """A user-facing error: its message says what went wrong and what to do."""


class NotApplicable(DynbenchError):
    """A method that cannot run on a task (an entropy exit on a regression output): an error for one run, a job
    skipped in a sweep over methods and tasks (``experiment=glue`` crosses all of them)."""
