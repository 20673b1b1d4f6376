"""Errors that name where bad input sits: file, row and column."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input. ``row`` is the 1-based line number in the source file when known."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None):
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def located(self, file: str) -> "InputError":
        """The same error with the file filled in when the raiser did not know it."""
        if self.file:
            return self
        return InputError(self.message, file=file, row=self.row, column=self.column)


class MappingError(InputError):
    """A mapping file that is itself wrong (unknown unit, missing column...)."""
