"""Property-based tests: for arbitrary bytes and arbitrary tables, a reader gives either
a valid canonical table or a clear InputError, never another exception."""

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.readers import RawFile, TraceOptions, read_raw
from pipeline.schema import SCHEMA
from pipeline.validation import validate
from tests.helpers import sample_lines

# FERRO_HYPOTHESIS_EXAMPLES raises the example count for a longer hunt.
SETTINGS = settings(max_examples=int(os.environ.get("FERRO_HYPOTHESIS_EXAMPLES", "200")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _outcome(data: bytes, name: str = "f.txt", trace=None):
    raw = RawFile(path=Path(name), data=data, sha256="0" * 64, size_on_disk=len(data))
    try:
        table = validate(read_raw(raw, trace=trace), name)
    except InputError as exc:
        assert exc.one_line().strip()
        return None
    assert table.schema.equals(SCHEMA)
    assert table.num_rows > 0
    return table


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data):
    _outcome(data)
    _outcome(data, "f.csv", TraceOptions("W", "D", 1e-6))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(sample_lines()) - 1), st.text(max_size=12)),
                min_size=1, max_size=5))
def test_instrument_files_with_arbitrary_edits(edits):
    lines = sample_lines()[:40]
    for i, text in edits:
        if i < len(lines):
            lines[i] = text
    _outcome("\n".join(lines).encode("utf-8", errors="replace"))


CELL = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=6), st.none())


@SETTINGS
@given(st.lists(st.fixed_dictionaries({
    "wafer": st.sampled_from(["W1", "../x", "", "W\x00"]), "die": st.just("X01Y02"),
    "device": st.just("D1"), "pulse_width_s": CELL, "pulse_amplitude_v": CELL,
    "cycle": CELL, "pulse": CELL, "conductance_state": CELL}), min_size=1, max_size=8))
def test_arbitrary_tidy_tables(rows):
    header = ",".join(rows[0].keys())
    body = "\n".join(",".join("" if v is None else str(v) for v in r.values()) for r in rows)
    _outcome((header + "\n" + body + "\n").encode(), "t.csv")
