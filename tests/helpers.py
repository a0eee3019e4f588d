"""Shared helpers of the test suite."""

import importlib.metadata
import os

import jax
import numpy as np

from vscjax import provenance
from vscjax.config import load_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, **overrides):
    """configs/<name>.py's config with overrides written ``train__batch_size=64``."""
    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    return load_file(os.path.join(REPO_ROOT, "configs", f"{name}.py"), dotted)


def assert_trees_equal(a, b):
    """Bit-identical pytrees (same structure, same values)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def check_record(record, extra=()):
    """``record`` is :func:`vscjax.provenance.record` of this process (with ``extra`` packages)."""
    versions = record["versions"]
    for name in (*provenance.PACKAGES, *extra):
        assert versions[name] == importlib.metadata.version(name), name
    assert versions["python"].count(".") == 2
    assert record["devices"] == {"kind": jax.devices()[0].device_kind, "count": jax.device_count(),
                                 "platform": "cpu", "processes": 1}
    assert set(record["git"]) == {"commit": None, "dirty": None}.keys()
