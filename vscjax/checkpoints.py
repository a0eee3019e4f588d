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

Several processes: every process saves and restores (orbax writes each process's part);
process 0 alone writes the config, the checksums and moves bad checkpoints. Which checkpoint
is restored is agreed: process 0 checks the checksums, every process tries the restore, and a
checkpoint that fails anywhere is rejected everywhere (a collective vote), so all processes
resume from the same step even when only one of them cannot read a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from vscjax import multihost
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
        if multihost.is_writer():  # replaced whole: other processes may be reading it
            with open(config_path + ".tmp", "w") as f:
                f.write(config.to_json(indent=2))
            os.replace(config_path + ".tmp", config_path)
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
        """Move a bad checkpoint out of the way (kept for inspection, by process 0), with a
        warning; every process calls it and then sees the checkpoint gone."""
        if multihost.is_writer():
            self._move_to_quarantine(step, reason)
        multihost.barrier(f"quarantined {step}")
        self.manager.reload()

    def _move_to_quarantine(self, step: int, reason: str) -> None:
        target_root = os.path.join(self.workdir, CORRUPT_DIR)
        os.makedirs(target_root, exist_ok=True)
        target = os.path.join(target_root, f"{step}")
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(target_root, f"{step}.{suffix}")
        os.rename(self._step_dir(step), target)
        logging.warning("checkpoint %s is corrupt (%s); moved to %s, using the one before it",
                        self._step_dir(step), reason, target)

    def restore_latest(self, abstract_state):
        """The newest state that every process can restore, or None if there is none.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings, the target.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            problem = verify_checksums(self._step_dir(step)) if multihost.is_writer() else None
            if not multihost.any_process(problem is not None):
                try:
                    restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
                except Exception as err:  # noqa: BLE001  any unreadable checkpoint: fall back
                    problem = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                if not multihost.any_process(problem is not None):
                    return restored
            problem = problem or "another process could not restore it"
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
        if (self._unsealed is not None and multihost.is_writer()
                and os.path.isdir(self._step_dir(self._unsealed))):
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


def load_trained(workdir: str, image_shape, num_classes: int, *, sharding=None):
    """(config, graphdef, state) of the newest restorable checkpoint in ``workdir``.

    The state is placed with ``sharding`` (default: this process's first device);
    ``nnx.merge(graphdef, state.params)`` is the model.
    """
    config = read_config(workdir)
    graphdef, init, _ = train_state.initial_state(config, image_shape, num_classes)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    checkpoints = Checkpoints.reader(workdir)
    try:
        state = checkpoints.restore_latest(train_state.abstract(init, sharding))
    finally:
        checkpoints.manager.close()
    if state is None:
        raise FileNotFoundError(f"no restorable checkpoint in {workdir}/checkpoints")
    return config, graphdef, state
