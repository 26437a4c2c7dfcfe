"""User-facing errors: one line naming the problem and the fix; the CLI exits with code 2."""


class LingtraceError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}" + (f" (fix: {fix})" if fix else ""))
