"""Orbax checkpoints of the train state, with the config saved beside them.

A checkpoint holds the whole train state (parameters, optimizer state, step, count of skipped
non-finite steps). The data position and the step's random key are pure functions of
``(seed, step)``, so the step restores both. Orbax writes each checkpoint to a temporary
folder and renames it when complete, so a run killed during a save leaves the previous
checkpoints intact; a checkpoint that still fails to restore is skipped with a warning and
the one before it is used.
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from vscjax.config import check_resume_compatible

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
