"""Small builders of raw files for tests."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SAMPLE

GOOD = SAMPLE / "W01_X00Y00_D1_20ns.txt"


def sample_lines(name: str = "W01_X00Y00_D1_20ns.txt") -> list[str]:
    return (SAMPLE / name).read_text().split("\n")


def write(path: Path, lines_or_text) -> Path:
    text = lines_or_text if isinstance(lines_or_text, (str, bytes)) else "\n".join(lines_or_text)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def edit_cell(lines: list[str], line_no: int, column: int, value: str) -> list[str]:
    """Replace one table cell; ``line_no`` is the 1-based file line."""
    out = list(lines)
    cells = out[line_no - 1].split("\t")
    cells[column] = value
    out[line_no - 1] = "\t".join(cells)
    return out


# In the sample files the header block has 8 lines, line 9 is blank, line 10 the table
# header and line 11 the first data row. Columns: Pulse, Cycle, V_write_V, I_read_A, E_pulse_pJ.
FIRST_DATA_LINE = 11
