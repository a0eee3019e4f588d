"""Shared helpers of the test suite."""

import os

import jax
import numpy as np

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


def committed_steps(workdir) -> list[int]:
    """Steps of the checkpoints orbax has committed in a workdir (temporary folders excluded)."""
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def saved_state(workdir, step=None):
    """The train state of a workdir's newest checkpoint (or of ``step``'s), read by orbax alone:
    a tree of parameters, optimizer state, step and the count of skipped steps."""
    import orbax.checkpoint as ocp

    step = committed_steps(workdir)[-1] if step is None else step
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "default"))
