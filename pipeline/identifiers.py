"""Validation of identifiers that become path parts or registry names.

Wafer, die and device ids come from raw files written by instruments and people; model
names and aliases come from users. All of them end up in file paths, so anything that
could escape a folder is refused: separators, ``..``, absolute paths, NUL and other
control characters, and leading dots (hidden files, which the store ignores).
"""

from __future__ import annotations

import re

from .errors import InputError

_ALLOWED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
MAX_LENGTH = 128


def check_identifier(value: object, what: str = "identifier") -> str:
    """Return ``value`` as a str if it is a safe identifier, else raise InputError."""
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, got {type(value).__name__}")
    if value == "":
        raise InputError(f"{what} is empty")
    if len(value) > MAX_LENGTH:
        raise InputError(f"{what} is longer than {MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{what} {value!r} contains control characters")
    if "/" in value or "\\" in value:
        raise InputError(f"{what} {value!r} contains a path separator")
    if ".." in value:
        raise InputError(f"{what} {value!r} contains '..'")
    if not _ALLOWED.match(value):
        raise InputError(
            f"{what} {value!r} may hold only letters, digits and _ . + - "
            "and must start with a letter or digit")
    return value
