"""Orbax checkpoints of the train state: saved, sealed with checksums, restored with care.

A checkpoint holds the whole train state (parameters, optimizer state, step, count of skipped
non-finite steps). The data position and the step's random key are pure functions of
``(seed, step)``, so the step restores both.

Safety: orbax writes each checkpoint to a temporary folder and renames it when complete, so a
run killed during a save leaves the previous checkpoints intact (the temporary folder is
removed when the next run starts). Once a save is on disk we add ``checksums.json`` (sha256 of
every file) to its folder; a checkpoint committed by orbax but not yet sealed (a kill between
the two) is sealed when it is restored. On restore:

* a checkpoint whose files do not match their checksums (garbled, truncated, deleted), or
  whose files orbax cannot read, is corrupt: it is moved to ``<workdir>/corrupt_checkpoints/``
  with a warning naming it, and the one before it is used;
* a readable checkpoint whose arrays do not fit the state this run builds (another tree,
  shape or dtype: the code or the data changed) stops the run with a
  :class:`CheckpointMismatchError` naming the checkpoint and what differs, and stays in place.

Nothing good is ever moved or overwritten.

Several processes: every process saves and restores (orbax writes each process's part);
process 0 alone writes the checksums and moves bad checkpoints. Which checkpoint is restored
is agreed: process 0 checks the checksums, every process tries the restore, and a checkpoint
that fails anywhere is rejected everywhere (a collective vote), so all processes resume from
the same step even when only one of them cannot read a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from vscjax import faults, multihost
from vscjax.workdir import checkpoints_dir, corrupt_dir, write_json_atomic

CHECKSUMS_FILE = "checksums.json"
ITEM_DIR = "default"  # the folder of the train state inside a step's checkpoint
MISMATCHES_SHOWN = 3  # differences named in a CheckpointMismatchError
READ_ONLY_NOTICE = "Given directory is read only"  # orbax's warning on opening a read-only manager


class CheckpointMismatchError(ValueError):
    """A readable checkpoint whose arrays do not fit the train state this run builds."""


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


def _leaf_name(path) -> str:
    """``params/encoder/heads/kernel/value`` for a pytree key path."""
    return "/".join(str(next(getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)))
                    for k in path)


def _leaf_specs(tree) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of every leaf of a tree of arrays or array metadata, by leaf name."""
    return {_leaf_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def state_mismatch(saved, wanted, *, partial: bool = False) -> str | None:
    """None if two trees have the same leaves with the same shapes and dtypes, else what differs.

    Args:
      saved: the tree of a checkpoint (orbax array metadata).
      wanted: the tree a restore asks for (arrays or ``jax.ShapeDtypeStruct``).
      partial: ``wanted`` asks for some of the saved leaves; the others are not a mismatch.

    Returns:
      None, or the first ``MISMATCHES_SHOWN`` differences in the order of ``wanted``'s leaves.
    """
    saved, wanted = _leaf_specs(saved), _leaf_specs(wanted)
    problems = []
    for name, (shape, dtype) in wanted.items():
        if name not in saved:
            problems.append(f"{name} is not in the checkpoint")
        elif saved[name][0] != shape:
            problems.append(f"{name} has shape {saved[name][0]} in the checkpoint, {shape} in this run")
        elif saved[name][1] != dtype:
            problems.append(f"{name} has dtype {saved[name][1]} in the checkpoint, {dtype} in this run")
    if not partial:
        problems += [f"{name} is only in the checkpoint" for name in saved if name not in wanted]
    if not problems:
        return None
    more = len(problems) - MISMATCHES_SHOWN
    return "; ".join(problems[:MISMATCHES_SHOWN]) + (f" (and {more} more)" if more > 0 else "")


# Parameters whose layout changed with their values in the same order: checkpoints written
# before the encoder heads had a latent axis of their own hold the kernel as [in, heads * L]
# and the bias as [heads * L]; they are read in that shape and reshaped ([in, heads, L], [heads, L]).
RESHAPED_LEAVES = ("encoder/heads/kernel/value", "encoder/heads/bias/value")


def _older_layouts(saved, abstract_state):
    """(target, {leaf name: the shape this run wants}) for a restore of ``saved``: the leaves of
    ``RESHAPED_LEAVES`` that the checkpoint holds in their older, flat layout are asked for in
    that layout (replicated), to be reshaped after the read."""
    saved_specs = _leaf_specs(saved)
    reshaped = {}

    def older(path, leaf):
        name = _leaf_name(path)
        shape = saved_specs.get(name, (None,))[0]
        if (name.endswith(RESHAPED_LEAVES) and shape is not None and shape != tuple(leaf.shape)
                and math.prod(shape) == math.prod(leaf.shape) and len(shape) == len(leaf.shape) - 1):
            reshaped[name] = tuple(leaf.shape)
            mesh_sharding = leaf.sharding
            flat = (jax.sharding.NamedSharding(mesh_sharding.mesh, jax.sharding.PartitionSpec())
                    if isinstance(mesh_sharding, jax.sharding.NamedSharding) else mesh_sharding)
            return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=flat)
        return leaf

    return jax.tree_util.tree_map_with_path(older, abstract_state), reshaped


def _reshape_older(state, abstract_state, reshaped: dict):
    """``state`` with the leaves read in an older layout reshaped and placed as the run wants."""
    if not reshaped:
        return state

    def fix(path, leaf, want):
        if _leaf_name(path) not in reshaped:
            return leaf
        return jax.jit(lambda x: x.reshape(want.shape), out_shardings=want.sharding)(leaf)

    return jax.tree_util.tree_map_with_path(fix, state, abstract_state)


class _FaultPointTemporaryPath(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """Orbax's temporary folder, renamed to commit a save, with a fault point just before the
    rename of a step's folder (:mod:`vscjax.faults`, ``checkpoint_commit``)."""

    async def finalize(self):
        name = self.get_final().name  # the step's folder, or an item's folder inside it
        if name.isdigit():
            faults.point("checkpoint_commit", int(name))
        await super().finalize()


class _DropReadOnlyNotice(logging.Filter):
    """Drops orbax's "Given directory is read only" warning, which every read-only manager logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(READ_ONLY_NOTICE)


@contextlib.contextmanager
def _quiet_read_only_notice():
    """Within: orbax's notice that a manager is read-only is not logged (a reader asks for that
    on purpose; the notice would greet every ``vscjax.load``). Orbax logs through absl."""
    logger, notice_filter = logging.getLogger("absl"), _DropReadOnlyNotice()
    logger.addFilter(notice_filter)
    try:
        yield
    finally:
        logger.removeFilter(notice_filter)


class Checkpoints:
    """Saves and restores train states under ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.read_only = False
        self._unsealed = None
        self.manager = ocp.CheckpointManager(
            checkpoints_dir(self.workdir),
            item_handlers=ocp.StandardCheckpointHandler(),  # reads the arrays' metadata too
            options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, create=True,
                                                 cleanup_tmp_directories=True,
                                                 temporary_path_class=_FaultPointTemporaryPath),
        )

    @classmethod
    def reader(cls, workdir: str) -> "Checkpoints":
        """Read-only access to a workdir made by ``train.py``: writes nothing, keeps everything."""
        self = cls.__new__(cls)
        self.workdir = os.path.abspath(workdir)
        self.read_only = True
        self._unsealed = None
        directory = checkpoints_dir(self.workdir)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no checkpoints in {self.workdir} (is it a train.py workdir?)")
        with _quiet_read_only_notice():
            self.manager = ocp.CheckpointManager(
                directory, item_handlers=ocp.StandardCheckpointHandler(),
                # save_interval_steps=0: what orbax sets (with a warning) for a read-only manager
                options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                     save_interval_steps=0))
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
        target_root = corrupt_dir(self.workdir)
        os.makedirs(target_root, exist_ok=True)
        target = os.path.join(target_root, f"{step}")
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(target_root, f"{step}.{suffix}")
        os.rename(self._step_dir(step), target)
        logging.warning("checkpoint %s is corrupt (%s); moved to %s, using the one before it",
                        self._step_dir(step), reason, target)

    def _restore(self, step: int, abstract_state, partial: bool = False):
        """(state, None) of checkpoint ``step``, or (None, why it is corrupt), agreed by every
        process (each step of the check is a collective vote, taken by every process).

        Raises:
          CheckpointMismatchError: the checkpoint is readable but holds another tree, shape or
            dtype than ``abstract_state`` (for a partial restore: than the fields it asks for).
        """
        elsewhere = "another process could not read it"
        problem = verify_checksums(self._step_dir(step)) if multihost.is_writer() else None
        if multihost.any_process(problem is not None):
            return None, problem or elsewhere
        try:
            saved = self.manager.item_metadata(step)
        except Exception as err:  # noqa: BLE001  any unreadable metadata: corrupt
            problem = _describe(err)
        if multihost.any_process(problem is not None):
            return None, problem or elsewhere
        target, reshaped = _older_layouts(saved, abstract_state)
        mismatch = state_mismatch(saved, target, partial=partial)
        if mismatch is not None:
            raise CheckpointMismatchError(
                f"checkpoint {self._step_dir(step)} does not fit the train state of this run: "
                f"{mismatch}; it was left in place (the code or the data changed since it was "
                "written: use another --workdir, or the code and data that wrote it)")
        state = None
        try:
            if not partial:
                state = self.manager.restore(step, args=ocp.args.StandardRestore(target))
            else:
                state = _restore_part(os.path.join(self._step_dir(step), ITEM_DIR), target)
            state = _reshape_older(state, abstract_state, reshaped)
        except Exception as err:  # noqa: BLE001  any unreadable data: corrupt
            problem = _describe(err)
        if multihost.any_process(problem is not None):
            return None, problem or elsewhere
        return state, None

    def restore_latest(self, abstract_state, *, partial: bool = False):
        """The newest state that every process can restore, or None if there is none.

        Corrupt checkpoints on the way are quarantined (skipped by a reader); a committed
        checkpoint without checksums is sealed once restored.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings, the target.
          partial: ``abstract_state`` is a dict of some of the saved fields (for example
            ``{"params": ..., "step": ...}``); only those are read (not Adam's moments).

        Raises:
          CheckpointMismatchError: the newest readable checkpoint does not fit
            ``abstract_state`` (it is left in place).
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            state, problem = self._restore(step, abstract_state, partial)
            if state is not None:
                sealed = os.path.exists(os.path.join(self._step_dir(step), CHECKSUMS_FILE))
                if not (sealed or self.read_only):
                    self._seal(step)
                return state
            if self.read_only:
                logging.warning("checkpoint %s is corrupt (%s); using the one before it",
                                self._step_dir(step), problem)
            else:
                self._quarantine(step, problem)
        return None

    def latest_step(self) -> int | None:
        """Step of the newest saved checkpoint (None if none)."""
        return self.manager.latest_step()

    def _seal(self, step: int) -> None:
        """Write the checksums of checkpoint ``step``'s files into its folder."""
        folder = self._step_dir(step)
        write_json_atomic(os.path.join(folder, CHECKSUMS_FILE), _file_checksums(folder), indent=0)

    def wait(self) -> None:
        """Block until pending saves are on disk, then seal them with their checksums."""
        self.manager.wait_until_finished()
        if (self._unsealed is not None and multihost.is_writer()
                and os.path.isdir(self._step_dir(self._unsealed))):
            faults.point("checkpoint_manifest", self._unsealed)
            self._seal(self._unsealed)
        self._unsealed = None

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        if not self.read_only:
            self.wait()
        self.manager.close()


def _restore_part(item_dir: str, abstract_part):
    """Read only the fields of ``abstract_part`` (a dict of some saved fields) from a
    checkpoint's item folder: orbax's partial restore of a saved tree."""
    args = ocp.args.PyTreeRestore(item=abstract_part, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part))
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(item_dir, args=args)


def _describe(err: Exception) -> str:
    """The first line of an exception, for a warning."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def load_params(workdir: str, abstract_params, *, sharding=None) -> tuple[nnx.State, int]:
    """(parameters, step) of the newest restorable checkpoint in ``workdir``, read alone (orbax's
    partial restore: the optimizer state is never read).

    Every process of a multi-process run must call it: which checkpoint is restored is agreed
    collectively (:meth:`Checkpoints.restore_latest`).

    Args:
      workdir: a train.py workdir.
      abstract_params: the model's parameters as ``jax.ShapeDtypeStruct`` (the state of
        ``nnx.split`` of a model built under ``nnx.eval_shape``).
      sharding: where the parameters are placed: one sharding for all, or a pytree of them
        (``vscjax.sharding.state_shardings``); default: this process's first device.

    Raises:
      FileNotFoundError: no checkpoint in ``workdir`` can be restored.
      CheckpointMismatchError: the newest readable checkpoint holds other parameters.
    """
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if isinstance(sharding, jax.sharding.Sharding):  # one placement for every leaf
        sharding = jax.tree.map(lambda _: sharding, abstract_params)
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract_params, sharding)
    step_sharding = jax.tree.leaves(sharding)[0]
    if isinstance(step_sharding, jax.sharding.NamedSharding):
        step_sharding = jax.sharding.NamedSharding(step_sharding.mesh, jax.sharding.PartitionSpec())
    target = {"params": params, "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=step_sharding)}
    checkpoints = Checkpoints.reader(workdir)
    try:
        restored = checkpoints.restore_latest(target, partial=True)
    finally:
        checkpoints.manager.close()
    if restored is None:
        raise FileNotFoundError(f"no restorable checkpoint in {checkpoints_dir(workdir)}")
    return restored["params"], int(restored["step"])
