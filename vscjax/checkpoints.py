"""Orbax checkpoints of the train state, with the config saved beside them.

A checkpoint holds the whole train state (parameters, optimizer state, step, count of skipped
non-finite steps). The data position and the step's random key are pure functions of
``(seed, step)``, so the step restores both. Orbax writes each checkpoint to a temporary
folder and renames it when complete, so a run killed during a save leaves the previous
checkpoints intact; a checkpoint that still fails to restore is skipped with a warning and
the one before it is used.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from vscjax import state as train_state
from vscjax.config import base_config, check_resume_compatible

CONFIG_FILE = "config.json"


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
        self.manager = ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, create=True),
        )

    @classmethod
    def reader(cls, workdir: str) -> "Checkpoints":
        """Read-only access to a workdir made by ``train.py``: writes nothing, keeps everything."""
        self = cls.__new__(cls)
        self.workdir = os.path.abspath(workdir)
        directory = os.path.join(self.workdir, "checkpoints")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no checkpoints in {self.workdir} (is it a train.py workdir?)")
        self.manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        return self

    def save(self, state, *, force: bool = False) -> None:
        """Save ``state`` under its step (asynchronously; :meth:`wait` blocks until done)."""
        step = int(jax.device_get(state.step))
        if step not in self.manager.all_steps():
            self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore_latest(self, abstract_state):
        """The newest restorable state, or None if there is none.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings, the target.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
            except Exception as err:  # noqa: BLE001  any unreadable checkpoint: fall back
                logging.warning("checkpoint at step %d in %s cannot be restored (%s: %s); "
                                "trying the one before it", step, self.manager.directory,
                                type(err).__name__, str(err).splitlines()[0][:200])
        return None

    def latest_step(self) -> int | None:
        """Step of the newest saved checkpoint (None if none)."""
        return self.manager.latest_step()

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


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


def load_trained(workdir: str, image_shape):
    """(config, graphdef, state) of the newest restorable checkpoint in ``workdir``.

    The state is placed on the default device; ``nnx.merge(graphdef, state.params)`` is the model.
    """
    config = read_config(workdir)
    graphdef, init, _ = train_state.initial_state(config, image_shape)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    checkpoints = Checkpoints.reader(workdir)
    try:
        state = checkpoints.restore_latest(train_state.abstract(init, device))
    finally:
        checkpoints.manager.close()
    if state is None:
        raise FileNotFoundError(f"no restorable checkpoint in {workdir}/checkpoints")
    return config, graphdef, state
