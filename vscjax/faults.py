"""Fault injection for tests: a signal sent to the process at a named moment of a run.

Set ``VSCJAX_FAULT=<point>[@<step>][:TERM]`` and the run sends itself SIGKILL (or SIGTERM with
``:TERM``) when it reaches ``point`` (at ``step``, if given). Unset, every point does nothing.
For example ``checkpoint_commit@20`` kills the run once orbax has written the checkpoint of
step 20 to its temporary folder and before the rename that commits it.

Points (N is a step: the number of updates done, as in checkpoint names and metrics.jsonl):

    startup                after the restore, before the first update
    step@N                 before update N is dispatched (N = 1: the first update of a run)
    metrics_append@N       half of the train record of step N written to metrics.jsonl
    logged@N               the train record of step N written whole
    checkpoint_commit@N    checkpoint N written to orbax's temporary folder, not yet renamed
    checkpoint_manifest@N  checkpoint N committed, its checksums.json not yet written
    final_evaluation       the final evaluation starts
"""

from __future__ import annotations

import functools
import os
import signal

ENV = "VSCJAX_FAULT"
POINTS = ("startup", "step", "metrics_append", "logged", "checkpoint_commit",
          "checkpoint_manifest", "final_evaluation")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


@functools.cache
def _parse(spec: str) -> tuple[str, int | None, signal.Signals]:
    """(point, step or None, signal) of a ``VSCJAX_FAULT`` value."""
    where, _, signal_name = spec.partition(":")
    target, _, step = where.partition("@")
    if target not in POINTS or signal_name not in ("", *SIGNALS) or (step and not step.isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected <point>[@<step>][:TERM] with a point of {POINTS}")
    return target, int(step) if step else None, SIGNALS[signal_name or "KILL"]


def armed(name: str, step: int | None = None) -> bool:
    """True when ``VSCJAX_FAULT`` names the point ``name`` (at ``step``, if it names a step)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    target, at, _ = _parse(spec)
    return target == name and (at is None or at == step)


def point(name: str, step: int | None = None) -> None:
    """Send this process the signal of ``VSCJAX_FAULT`` if it names the point ``name``."""
    if armed(name, step):
        os.kill(os.getpid(), _parse(os.environ[ENV])[2])
