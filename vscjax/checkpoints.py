"""Orbax checkpoints of the train state, with the config saved beside them.

A checkpoint holds the whole train state (parameters, optimizer state, step, count of skipped
non-finite steps). The data position and the step's random key are pure functions of
``(seed, step)``, so the step restores both.

Safety: orbax writes each checkpoint to a temporary folder and renames it when complete, so a
run killed during a save leaves the previous checkpoints intact. Once a save is on disk we
add ``checksums.json`` (sha256 of every file) to its folder. On restore, a checkpoint whose
files do not match their checksums (garbled or truncated), or that orbax cannot read, is
moved to ``<workdir>/corrupt_checkpoints/`` with a warning naming it, and the one before it is
used; nothing good is ever overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from vscjax import state as train_state
from vscjax.config import base_config, check_resume_compatible

CONFIG_FILE = "config.json"
CHECKSUMS_FILE = "checksums.json"
CORRUPT_DIR = "corrupt_checkpoints"


def _file_checksums(folder: str) -> dict[str, str]:
    """sha256 of every file under ``folder`` (but the checksum file), by relative path."""
    sums = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel.startswith(CHECKSUMS_FILE):  # the checksums and their temporary file
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            sums[rel] = digest.hexdigest()
    return sums


def verify_checksums(folder: str) -> str | None:
    """None if ``folder``'s files match its checksums (or it has none), else what is wrong."""
    path = os.path.join(folder, CHECKSUMS_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            expected = json.load(f)
    except (OSError, ValueError) as err:
        return f"unreadable {CHECKSUMS_FILE} ({err})"
    actual = _file_checksums(folder)
    for rel, digest in expected.items():
        if rel not in actual:
            return f"file {rel} is missing"
        if actual[rel] != digest:
            return f"file {rel} does not match its checksum"
    return None


class Checkpoints:
    """Saves and restores train states under ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        config_path = os.path.join(self.workdir, CONFIG_FILE)
        if os.path.exists(config_path):
            with open(config_path) as f:
                check_resume_compatible(f.read(), config)
        with open(config_path, "w") as f:
            f.write(config.to_json(indent=2))
        self.read_only = False
        self._unsealed = None
        self.manager = ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, create=True),
        )

    @classmethod
    def reader(cls, workdir: str) -> "Checkpoints":
        """Read-only access to a workdir made by ``train.py``: writes nothing, keeps everything."""
        self = cls.__new__(cls)
        self.workdir = os.path.abspath(workdir)
        self.read_only = True
        self._unsealed = None
        directory = os.path.join(self.workdir, "checkpoints")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no checkpoints in {self.workdir} (is it a train.py workdir?)")
        self.manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        return self

    def save(self, state, *, force: bool = False) -> None:
        """Save ``state`` under its step (asynchronously; :meth:`wait` blocks until done)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.wait()
        self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
        self._unsealed = step

    def _step_dir(self, step: int) -> str:
        return os.path.join(str(self.manager.directory), str(step))

    def _quarantine(self, step: int, reason: str) -> None:
        """Move a bad checkpoint out of the way (kept for inspection), with a warning."""
        target_root = os.path.join(self.workdir, CORRUPT_DIR)
        os.makedirs(target_root, exist_ok=True)
        target = os.path.join(target_root, f"{step}")
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(target_root, f"{step}.{suffix}")
        os.rename(self._step_dir(step), target)
        self.manager.reload()
        logging.warning("checkpoint %s is corrupt (%s); moved to %s, using the one before it",
                        self._step_dir(step), reason, target)

    def restore_latest(self, abstract_state, *, partial: bool = False):
        """The newest restorable state, or None if there is none.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings, the target.
          partial: ``abstract_state`` is a dict of some of the saved fields (for example
            ``{"params": ..., "step": ...}``); only those are read (not Adam's moments).
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            problem = verify_checksums(self._step_dir(step))
            if problem is None:
                try:
                    return self.manager.restore(step, args=_restore_args(abstract_state, partial))
                except Exception as err:  # noqa: BLE001  any unreadable checkpoint: fall back
                    problem = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            if self.read_only:
                logging.warning("checkpoint %s is corrupt (%s); using the one before it",
                                self._step_dir(step), problem)
            else:
                self._quarantine(step, problem)
        return None

    def latest_step(self) -> int | None:
        """Step of the newest saved checkpoint (None if none)."""
        return self.manager.latest_step()

    def wait(self) -> None:
        """Block until pending saves are on disk, then seal them with their checksums."""
        self.manager.wait_until_finished()
        if self._unsealed is not None and os.path.isdir(self._step_dir(self._unsealed)):
            folder = self._step_dir(self._unsealed)
            sums = _file_checksums(folder)
            tmp = os.path.join(folder, CHECKSUMS_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump(sums, f, indent=0)
            os.replace(tmp, os.path.join(folder, CHECKSUMS_FILE))
        self._unsealed = None

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        if not self.read_only:
            self.wait()
        self.manager.close()


def _restore_args(abstract_state, partial: bool) -> ocp.args.CheckpointArgs:
    """Orbax's arguments to restore ``abstract_state``, the whole saved tree or a part of it."""
    if not partial:
        return ocp.args.StandardRestore(abstract_state)
    return ocp.args.PyTreeRestore(
        item=abstract_state, partial_restore=True,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (its ``config.json``)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {CONFIG_FILE} in {workdir} (is it a train.py workdir?)")
    with open(path) as f:
        saved = json.load(f)
    config = base_config()  # keys added since the run keep their defaults

    def merge(node, values):
        for key, value in values.items():
            if isinstance(value, dict):
                merge(node[key], value)
            else:
                node[key] = tuple(value) if isinstance(value, list) else value

    merge(config, saved)
    return config


def load_trained(workdir: str, image_shape, num_classes: int):
    """(config, graphdef, state) of the newest restorable checkpoint in ``workdir``.

    The state is placed on the default device; ``nnx.merge(graphdef, state.params)`` is the model.
    """
    config = read_config(workdir)
    graphdef, init, _ = train_state.initial_state(config, image_shape, num_classes)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return config, graphdef, _restore_newest(workdir, train_state.abstract(init, device))


def load_params(workdir: str, abstract_params) -> tuple[nnx.State, int]:
    """(parameters, step) of the newest restorable checkpoint in ``workdir``, read alone (not
    the optimizer state) and placed on the default device.

    Args:
      workdir: a train.py workdir.
      abstract_params: the model's parameters as ``jax.ShapeDtypeStruct`` (the state of
        ``nnx.split`` of a model built under ``nnx.eval_shape``).
    """
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = train_state.abstract(
        {"params": abstract_params, "step": jax.ShapeDtypeStruct((), jnp.int32)}, device)
    restored = _restore_newest(workdir, target, partial=True)
    return restored["params"], int(restored["step"])


def _restore_newest(workdir: str, target, *, partial: bool = False):
    """``Checkpoints.restore_latest`` of a read-only workdir; FileNotFoundError if none is."""
    checkpoints = Checkpoints.reader(workdir)
    try:
        restored = checkpoints.restore_latest(target, partial=partial)
    finally:
        checkpoints.manager.close()
    if restored is None:
        raise FileNotFoundError(f"no restorable checkpoint in {workdir}/checkpoints")
    return restored
