"""User-facing errors: one line, naming file, line and field where known."""

from __future__ import annotations


class PLWError(Exception):
    """An error caused by user input. The CLI prints it as one line and exits with code 2."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.problem = file, line, field, message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.problem}".replace("\n", " ")


def first_line(err: BaseException) -> str:
    """A library exception's message cut to its first line (its type name when it has none), to
    quote inside a one-line `PLWError`."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
