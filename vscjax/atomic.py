"""Files replaced whole: written beside their place, then renamed over it.

Every file the project writes (JSON results, configs, checksums, codes, plots, tables) goes
through :func:`replace_file`: the content goes to a temporary file in the same folder, is
flushed to the disk, and only then renamed over the old file (``os.replace``, atomic on a
POSIX file system). A kill, a full disk or a read-only folder therefore leaves the old file or
the new one, never a cut one, and a reader never meets half a file. A failed write removes
its temporary file. Each writer has a temporary file of its own, so two writers of one file
cannot mix their contents either: the last rename wins.

This module imports no other module of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def replace_file(path: str, mode: str = "w") -> Iterator[IO]:
    """A file opened for writing whose content replaces ``path`` when the block ends.

    If the block raises (or the write, the flush or the rename fails), ``path`` keeps its old
    contents (or stays absent) and the temporary file is removed; an ``OSError`` is raised
    again naming ``path`` (not the temporary file).

    Args:
      path: the file to replace.
      mode: "w" (text) or "wb" (bytes).

    Yields:
      The open temporary file ``.<name>.<random>.tmp`` in ``path``'s folder.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    # O_EXCL: this writer's own file; 0o666 & umask, as open() would make the final file.
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from err
    try:
        with os.fdopen(handle, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # on the disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise OSError(err.errno, err.strerror, path) from err
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Replace the file ``path`` by ``text`` at once (:func:`replace_file`)."""
    with replace_file(path) as f:
        f.write(text)


def write_json_atomic(path: str, value, *, indent: int | None = None) -> None:
    """Replace the file ``path`` by ``value`` as JSON (:func:`replace_file`).

    Args:
      path: the file.
      value: anything ``json.dumps`` takes.
      indent: ``json.dumps``'s indent (None: one line).
    """
    write_text_atomic(path, json.dumps(value, indent=indent))
