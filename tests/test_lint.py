"""The linter over the whole tree (ruff, configured in pyproject.toml): CI runs it through this
test, so a change that breaks the import order, leaves an unused name or a line too long does
not land. Locally: ``ruff check .`` (``ruff check --fix .`` mends what it can)."""

import subprocess

import pytest

from helpers import REPO_ROOT


def test_ruff_finds_nothing():
    ruff = pytest.importorskip("ruff", reason='ruff is not installed (pip install -e ".[test]")')
    result = subprocess.run([ruff.find_ruff_bin(), "check", "--no-cache", "."], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
