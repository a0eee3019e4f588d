"""Who imports whom (docs/design.md, "The map of the code"), checked in fresh interpreters."""

import subprocess
import sys

import pytest

from helpers import REPO_ROOT


def _modules_after(statement: str) -> set[str]:
    """The names in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def test_training_never_imports_the_evaluation():
    loaded = _modules_after("import vscjax.train")
    assert "vscjax.evaluate" not in loaded and "vscjax.experiment" not in loaded


@pytest.mark.parametrize("module", ["metrics", "spike_slab", "alignment", "tables", "atomic", "cli"])
def test_the_math_and_the_small_helpers_import_no_other_module_of_ours(module):
    loaded = _modules_after(f"import vscjax.{module}")
    assert {name for name in loaded if name.startswith("vscjax.")} == {f"vscjax.{module}"}


def test_the_library_imports_no_benchmark_and_no_pytorch():
    loaded = _modules_after("import vscjax.experiment")  # the training loop and the evaluation
    assert not {name for name in loaded if name.split(".")[0] in ("benchmarks", "torch")}
