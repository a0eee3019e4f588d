"""What the command lines share: a bad input or a failed write stops them with one line.

``train.py``, ``python -m vscjax.evaluate`` and ``python -m vscjax.aot`` end a failure with one
line on stderr, ``<prog>: <what went wrong and what to do>``, and exit status 1:

* :class:`OneLineParser`: argparse whose errors (a missing flag, a value of the wrong type or
  range) are one such line, not a usage block with exit status 2;
* :func:`os_error_line`: an ``OSError`` (a full disk, a read-only folder, no permission) as
  the path and what happened;
* :func:`held_back_background_errors`: what libraries' background threads report while a
  command runs (orbax's failed save, TensorBoard's writer, asyncio) is held back; if the
  command fails, its one line says what happened and the held-back reports are dropped; if
  it succeeds, they are shown at the end, so nothing is hidden from a run that went well.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import sys
import threading
from collections.abc import Iterator

BACKGROUND_LOGGERS = ("absl", "asyncio")  # orbax logs through absl


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line ``<prog>: <message>`` (``prog`` without
    its ``python -m``) and exit status 1."""

    def error(self, message: str):
        sys.exit(f"{self.prog.removeprefix('python -m ')}: {message} (see --help)")


def os_error_line(err: OSError) -> str:
    """What an ``OSError`` means and what to do, naming its path (one line, no prefix)."""
    path = err.filename if err.filename is not None else "a file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk of {path}: free some space there, or write to another folder"
    if err.errno == errno.EFBIG:
        return f"{path} would exceed the file size limit: raise the limit, or write to another folder"
    if err.errno == errno.EROFS:
        return f"{path} is on a read-only file system: write to another folder"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied for {path}: write to a folder you may, or change its permissions"
    if err.errno == errno.ENOENT:
        return f"{path} does not exist"
    return f"{path}: {err.strerror or err}"


class _HoldBack(logging.Filter):
    """Keeps error records for later instead of letting them through."""

    def __init__(self, held: list):
        super().__init__()
        self.held = held

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.held.append(("log", record))
        return False


@contextlib.contextmanager
def held_back_background_errors() -> Iterator[None]:
    """Hold back error logs of ``BACKGROUND_LOGGERS``, exceptions of other threads and
    unraisable exceptions while the block runs; show them after it if it succeeds, drop them
    (for the rest of the process) if it raises."""
    held: list = []
    hold = _HoldBack(held)
    loggers = [logging.getLogger(name) for name in BACKGROUND_LOGGERS]
    previous = threading.excepthook, sys.unraisablehook
    for logger in loggers:
        logger.addFilter(hold)
    threading.excepthook = lambda args: held.append(("thread", args))
    sys.unraisablehook = lambda args: held.append(("unraisable", args))
    yield  # an exception leaves everything held back: the command's own line tells it
    for logger in loggers:
        logger.removeFilter(hold)
    threading.excepthook, sys.unraisablehook = previous
    for kind, item in held:
        if kind == "log":
            logging.getLogger(item.name).handle(item)
        elif kind == "thread":
            previous[0](item)
        else:
            previous[1](item)
