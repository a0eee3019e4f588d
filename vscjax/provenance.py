"""Where a result came from: package versions, devices, and the git commit of the code.

Every JSON file of results (``summary.json``, ``eval.json``, the benchmarks' reports) carries
:func:`record` under the key ``"provenance"``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
GIT_TIMEOUT_S = 10.0
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding vscjax/


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Python's version and each installed package's (None where it is not installed)."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(directory: str, *args: str) -> str | None:
    """The output of ``git -C directory args``, or None if git fails or is missing."""
    try:
        done = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(directory: str = CODE_ROOT) -> dict:
    """The commit checked out at ``directory`` and whether tracked files differ from it.

    Returns:
      dict: commit (hex sha) and dirty (bool); both None when ``directory`` is not the top of
      a git checkout (an installed copy of vscjax, or git missing).
    """
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top) != os.path.realpath(directory):
        return {"commit": None, "dirty": None}
    commit = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def record(extra_packages: Sequence[str] = ()) -> dict:
    """The provenance of a result produced now by this process.

    Args:
      extra_packages: distributions to report beside ``PACKAGES`` (e.g. "torch" where used).

    Returns:
      dict: versions (python and each package), devices (kind of the first device, count of
      all devices, platform, process count) and git (:func:`git_state` of this code).
    """
    import jax

    devices = jax.devices()
    return {
        "versions": package_versions((*PACKAGES, *extra_packages)),
        "devices": {"kind": devices[0].device_kind, "count": len(devices),
                    "platform": devices[0].platform, "processes": jax.process_count()},
        "git": git_state(),
    }
