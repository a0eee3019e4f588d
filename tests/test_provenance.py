"""Provenance: versions, devices and the git commit recorded with every result."""

import importlib.metadata
import subprocess

import pytest

from helpers import REPO_ROOT, check_record
from vscjax import provenance


def _git(directory, *args):
    return subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_record_names_versions_devices_and_this_checkout():
    record = provenance.record()
    check_record(record)
    assert record["devices"]["count"] == 8  # the test suite's fake devices
    try:
        head = _git(REPO_ROOT, "rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the code under test is not a git checkout")
    assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)


def test_git_state_commit_and_dirty_flag(tmp_path):
    assert provenance.git_state(str(tmp_path)) == {"commit": None, "dirty": None}  # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert provenance.git_state(str(tmp_path)) == {"commit": head, "dirty": False}
    (tmp_path / "notes.txt").write_text("untracked files do not change the code\n")
    assert provenance.git_state(str(tmp_path))["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state(str(tmp_path)) == {"commit": head, "dirty": True}
    # A copy of the code inside someone else's checkout (say, a virtual environment there) is
    # not that checkout's code.
    (tmp_path / "site-packages").mkdir()
    assert provenance.git_state(str(tmp_path / "site-packages")) == {"commit": None, "dirty": None}


def test_benchmark_reports_record_provenance_with_torch():
    pytest.importorskip("torch")
    from benchmarks import harness

    record = harness.run_record("benchmarks.throughput", "cpu", 2, {"ran": False})
    check_record(record["provenance"], extra=("torch",))
    assert harness.report_versions(record)["torch"] == importlib.metadata.version("torch")
    assert harness.report_versions({"versions": {"jax": "0.1"}}) == {"jax": "0.1"}  # older reports

