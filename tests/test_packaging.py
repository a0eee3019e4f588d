"""The README's install and its Python example, as a new user meets them: a clone in a folder
named ``vscjax``, installed with ``pip install -e .``, used from the folder above it."""

import os
import re
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

from helpers import REPO_ROOT, load_config
from vscjax import train

PACKAGED = ("pyproject.toml", "README.md", "LICENSE", "vscjax")  # what the editable install reads


def readme_example() -> str:
    """The Python code block of the README's "Using a trained model" section."""
    readme = open(os.path.join(REPO_ROOT, "README.md")).read()
    section = readme.split("## Using a trained model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _editable_install(clone, site_dir) -> None:
    """What ``pip install -e .`` does in ``clone``: build its editable wheel (PEP 660, with the
    project's own build backend) and unpack it into the site folder ``site_dir``."""
    wheels = clone.parent / "wheels"
    build = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                               "print(b.build_editable(sys.argv[1]))", str(wheels)],
        cwd=clone, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    with zipfile.ZipFile(wheels / build.stdout.split()[-1]) as wheel:
        wheel.extractall(site_dir)


@pytest.mark.slow
def test_readme_example_runs_from_the_parent_of_a_clone_named_vscjax(tmp_path, mnist_dir):
    """The folder ``vscjax`` of a clone is, seen from its parent, a namespace package of that
    name: an install that puts its package on the path through an import hook (setuptools'
    default for this layout) loses to it, and ``vscjax.load`` does not exist."""
    clone = tmp_path / "vscjax"
    clone.mkdir()
    for name in PACKAGED:
        source = os.path.join(REPO_ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(source):
            shutil.copy(source, clone / name)
    site_dir = tmp_path / "site"
    _editable_install(clone, site_dir)
    train.run(load_config("tiny", data__source="idx", data__name="mnist", model__prior="class_mask",
                          train__num_steps=5, train__eval_batch_size=1000),
              str(tmp_path / "workdir" / "mnist"))
    # A fresh interpreter without this environment's own install of vscjax (-S: no site
    # folders processed): the dependencies' folders, then the clone's install, as pip leaves it.
    code = (f"import site, sys; sys.path.extend({site.getsitepackages()!r}); "
            f"site.addsitedir({str(site_dir)!r})\n{readme_example()}\n"
            "print('RESULT', samples.shape, threes.shape, vscjax.__file__)")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    shapes = "(16, 28, 28, 1) (16, 28, 28, 1)"  # samples, and threes: the class-mask branch ran
    assert f"RESULT {shapes} {clone / 'vscjax' / '__init__.py'}" in result.stdout
    assert "read only" not in result.stderr  # loading a model is quiet
