"""One run per workdir: an OS file lock held for the life of a training run.

The run that trains in a workdir holds ``<workdir>/train.lock`` (``workdir.lock_path``) with
``flock``: a second run on the same workdir stops at once with one line naming the holder (its
host and process id, written into the lock file), before it reads or writes anything else. The
lock belongs to the holder's open file, so the operating system releases it when the process
ends, however it ends: a run killed with SIGKILL never blocks its rerun, and the file left
behind is not a lock by itself.

Several processes: process 0 alone takes the lock (as it alone writes the workdir's files), and
every process learns the outcome collectively (``multihost.any_process``), so all of them stop
when the workdir is taken. A workdir on a network file system needs one whose locks reach
every host (NFS v4, Filestore); without locks ``flock`` raises and the run stops, naming the
file.

Readers (``vscjax.evaluate``, ``vscjax.load``) take no lock: they read what a run has
committed, and survive it deleting old checkpoints (``vscjax.checkpoints``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator

from vscjax import multihost
from vscjax.workdir import lock_path


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir's lock."""


def holder(workdir: str) -> dict | None:
    """What the lock file of ``workdir`` says of the run that holds (or last held) it:
    ``{"host", "pid", "since"}``, or None if there is no such record."""
    try:
        with open(lock_path(workdir)) as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _take(workdir: str) -> int:
    """The open, locked lock file of ``workdir`` (the folder is made); raises
    :class:`WorkdirBusyError` if another process holds it."""
    os.makedirs(workdir, exist_ok=True)
    path = lock_path(workdir)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(handle)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        who = holder(workdir)
        named = (f"process {who.get('pid')} on {who.get('host')}, since {who.get('since')}"
                 if who else "a run that has not yet written its name")
        raise WorkdirBusyError(
            f"{os.path.abspath(workdir)} is in use by another training run ({named}; lock "
            f"{path}); wait for it to end, stop it, or use another --workdir") from None
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:  # in place: the lock belongs to this file, a renamed new one would hold none
        os.ftruncate(handle, 0)
        os.pwrite(handle, (json.dumps(record) + "\n").encode(), 0)
    except OSError:
        os.close(handle)
        raise
    return handle


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Hold ``workdir``'s lock while the block runs (process 0 takes it for all processes).

    Every process of a run must enter it at the same point (a collective).

    Raises:
      WorkdirBusyError: another run holds the workdir (in every process).
      OSError: the lock file cannot be made (a read-only folder, no permission, a full disk).
    """
    handle, problem = None, None
    if multihost.is_writer():
        try:
            handle = _take(workdir)
        except (WorkdirBusyError, OSError) as err:
            problem = err
    if multihost.any_process(problem is not None):
        if problem is not None:
            raise problem
        raise WorkdirBusyError(f"process 0 could not lock {os.path.abspath(workdir)} (another run "
                               "holds it, or the folder cannot be written); see its message")
    try:
        yield
    finally:
        if handle is not None:
            os.close(handle)  # releases the lock; the file stays (removing it would race a taker)
