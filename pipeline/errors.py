"""Errors that name where bad input sits: file, row and column."""

from __future__ import annotations

import errno
import os


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


class ReadOnlyError(InputError):
    """A write refused by the file system: the store, registry or folder is read-only
    (a read-only mount, or no write permission for this user)."""


class WorkerLost(RuntimeError):
    """A worker process of a pool ended abruptly (a signal, the out-of-memory killer):
    the work stopped; nothing half-done was kept."""


# what the OS answers when a place cannot be written: a read-only mount, no permission
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def read_only(what: str, where, exc: OSError) -> ReadOnlyError | None:
    """``exc`` as a one-line ReadOnlyError naming ``what`` (store, registry...) and its
    path when the OS refused a write, else None (the caller re-raises ``exc``)."""
    if exc.errno not in READ_ONLY_ERRNOS:
        return None
    return ReadOnlyError(f"{what} {where} is read-only ({exc.strerror}): nothing was written")


def probe_writable(folder, what: str) -> None:
    """Ask the OS whether ``folder`` (created if missing) takes new files, without leaving
    one behind; a ReadOnlyError when it says no."""
    import tempfile

    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".ferroflow-probe-"):
            pass
    except OSError as exc:
        raise read_only(what, folder, exc) or exc from None
