"""Shared helpers of the test suite."""

import importlib.util
import os

import jax
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, **overrides):
    """configs/<name>.py's config, unlocked long enough to apply dotted ``overrides``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def assert_trees_equal(a, b):
    """Bit-identical pytrees (same structure, same values)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
