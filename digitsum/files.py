"""Files: atomic writes (a temporary file in the same folder, then a rename), and the one check of a
file to read, whose message says whether the path is missing, a folder or something else.

A failed write (disk full, Ctrl-C) leaves the old file, or none, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from digitsum.errors import DataError, UsageError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` with the usual permissions."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name inside it", str(path))
    if path.exists() and not path.is_file():  # a device or a pipe: renaming over it would replace it
        raise OSError(errno.EINVAL, "is not a regular file; give a file name", str(path))
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(blocking))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:  # name the user's path, not the temporary file's
        raise type(error)(error.errno, error.strerror, str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a plain open() would give 0644
        try:
            os.replace(tmp, path)
        except OSError as error:
            raise type(error)(error.errno, error.strerror, str(path)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def require_file(
    path: str | Path, what: str, how: str, error: type[UsageError] = DataError, missing: str | None = None
) -> Path:
    """`path` if it is a regular file; else ``error`` naming what it is instead: "PATH: no such WHAT;
    HOW" (``missing`` replaces that line), "PATH: is a folder, not a WHAT; give the file inside it",
    or "PATH: is not a regular file (a device, a pipe or a socket); give a WHAT"."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}; give a file inside it")
    if path.exists():
        raise error(f"{path}: is not a regular file (a device, a pipe or a socket); give a {what}")
    raise error(missing or f"{path}: no such {what}; {how}")
