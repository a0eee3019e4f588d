"""Shared helpers of the test suite."""

import gzip
import importlib.metadata
import os
import struct

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


def named_leaves(tree) -> dict:
    """{"decoder/out/bias/value": array, ...}: a pytree's leaves by their path, the same for an
    ``nnx.State`` and for the nested dicts orbax reads back without a target."""
    return {"/".join(str(next(getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)))
                     for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_leaves(a, b):
    """Bit-identical leaves under the same names (:func:`named_leaves`)."""
    a, b = named_leaves(a), named_leaves(b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def check_record(record, extra=()):
    """``record`` is :func:`vscjax.provenance.record` of this process (with ``extra`` packages)."""
    versions = record["versions"]
    for name in (*provenance.PACKAGES, *extra):
        assert versions[name] == importlib.metadata.version(name), name
    assert versions["python"].count(".") == 2
    assert record["devices"] == {"kind": jax.devices()[0].device_kind, "count": jax.device_count(),
                                 "platform": "cpu", "processes": 1}
    assert set(record["git"]) == {"commit": None, "dirty": None}.keys()


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


def write_idx(directory, split="train", n_images=5, n_labels=5, rows=3, cols=2, gz=True,
              images_magic=2051, labels_magic=2049, cut=0, seed=0, labels=None):
    """Write a small IDX pair into the folder ``directory`` (a Path); returns the (pixels,
    labels) written. Labels are random in [0, 10) unless given; ``cut`` drops image bytes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n_images, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels, dtype=np.uint8) if labels is None else np.asarray(labels, np.uint8)
    prefix = "train" if split == "train" else "t10k"
    images_bytes = struct.pack(">IIII", images_magic, n_images, rows, cols) + pixels.tobytes()
    files = {
        f"{prefix}-images-idx3-ubyte": images_bytes[: len(images_bytes) - cut],
        f"{prefix}-labels-idx1-ubyte": struct.pack(">II", labels_magic, n_labels) + labels.tobytes(),
    }
    for stem, payload in files.items():
        if gz:
            with gzip.open(directory / f"{stem}.gz", "wb") as f:
                f.write(payload)
        else:
            (directory / stem).write_bytes(payload)
    return pixels, labels
