"""Atomic file writes: a temporary file in the target folder, flush, fsync, then ``os.replace``.

A reader never sees a half-written file: either the previous version or the new one. If the
process dies or an error occurs before the rename, the previous file is left untouched and the
temporary file is removed (when the process is still alive to do so).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and move it over ``path`` on success.

    Args:
        path: final file path; its folder must exist.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Yields:
        the open temporary file.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        # mkstemp creates the file readable by its owner only. Give it the mode of a plain
        # open() instead, 0666 less the umask, so that colleagues can read results.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        # The rename did not happen, so the previous version of ``path`` is still in place.
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def _umask() -> int:
    # The process umask can only be read by setting it, so set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable. Some platforms (Windows) cannot open a folder: skip there.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json_atomic(
    path: str | Path, data: Any, default: Callable[[Any], Any] | None = None
) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=default) + "\n")
