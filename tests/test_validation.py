"""Validation pieces the bad-file catalogue (``test_bad_files.py``) does not reach directly."""

import pytest

from pipeline.errors import InputError
from tests.helpers import sample_lines, write


def test_file_that_changes_while_being_read(tmp_path):
    from pipeline.ingest import _check_unchanged
    from pipeline.readers import load

    path = write(tmp_path / "growing.txt", sample_lines())
    raw = load(path)
    with open(path, "a") as fh:
        fh.write("601\t3\t-2.5\t4e-08\t1.8\n")
    with pytest.raises(InputError, match="changed while being read"):
        _check_unchanged(path, raw.size_on_disk)
