"""digitsum.files: atomic writes, and the user's path in every error."""

from __future__ import annotations

import os

import pytest

from digitsum.files import atomic_path


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("kind", ["folder", "pipe", "file in the way"])
def test_errors_name_the_users_path_and_change_nothing(tmp_path, kind):
    if kind == "folder":
        target = tmp_path / "adir"
        target.mkdir()
    elif kind == "pipe":
        target = tmp_path / "fifo"
        os.mkfifo(target)  # a device or pipe: renaming over it would replace it
    else:
        (tmp_path / "afile").write_text("x\n")
        target = tmp_path / "afile" / "out.txt"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        tmp.write_text("never\n")
    assert ".tmp" not in str(caught.value.filename) and str(caught.value.filename) in (
        str(target),
        str(tmp_path / "afile"),
    )
    assert sorted(os.listdir(tmp_path)) == before
