"""One exception type for input a user can fix.

The CLI prints such an error as a single line (problem, then fix) and exits non-zero,
instead of a traceback. Everything else is a bug and keeps its traceback.
"""


class SaexError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")
