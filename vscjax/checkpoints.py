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

Readers (``vscjax.load``, ``vscjax.evaluate``) need no lock and may read while a run trains in
the workdir: each read targets one checkpoint folder (metadata, checksums and arrays of the
one step chosen), and a checkpoint deleted under the reader by the run's ``max_to_keep`` is
not taken for corrupt: the newest checkpoint is chosen again. Failures to write (a full disk,
a read-only folder) are raised as the ``OSError`` behind orbax's own exception.

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
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from vscjax import faults, multihost
from vscjax.atomic import write_json_atomic
from vscjax.workdir import checkpoints_dir, corrupt_dir

CHECKSUMS_FILE = "checksums.json"
ITEM_DIR = "default"  # the folder of the train state inside a step's checkpoint
MISMATCHES_SHOWN = 3  # differences named in a CheckpointMismatchError
VANISHED_RETRIES = 10  # checkpoints deleted under a reader before it gives up


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


class Checkpoints:
    """Saves and restores train states under ``<workdir>/checkpoints``.

    Saving goes through orbax's ``CheckpointManager`` (which keeps ``train.max_to_keep``
    checkpoints, deleting older ones); reading does not need it: the committed checkpoints
    are the folders named by a step, each read on its own.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.read_only = False
        self._unsealed = None
        with self._os_errors():
            self.manager = ocp.CheckpointManager(
                checkpoints_dir(self.workdir),
                item_handlers=ocp.StandardCheckpointHandler(),
                options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, create=True,
                                                     cleanup_tmp_directories=True,
                                                     temporary_path_class=_FaultPointTemporaryPath),
            )

    @classmethod
    def reader(cls, workdir: str) -> Checkpoints:
        """Read-only access to a workdir made by ``train.py``: writes nothing, keeps everything,
        and reads while a run trains there (:meth:`restore_latest`)."""
        self = cls.__new__(cls)
        self.workdir = os.path.abspath(workdir)
        self.read_only = True
        self._unsealed = None
        self.manager = None
        if not os.path.isdir(checkpoints_dir(self.workdir)):
            raise FileNotFoundError(f"no checkpoints in {self.workdir} (is it a train.py workdir?)")
        return self

    @contextlib.contextmanager
    def _os_errors(self):
        """Orbax's failures to write, which arrive as other exceptions (tensorstore's
        ``ValueError``) or as an ``OSError`` without a path, raised as the ``OSError`` behind
        them, naming the checkpoints folder."""
        try:
            yield
        except Exception as err:
            if isinstance(err, OSError) and err.filename is not None:
                raise
            code = _os_error_code(err)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), checkpoints_dir(self.workdir)) from err

    def save(self, state, *, force: bool = False) -> None:
        """Save ``state`` under its step (asynchronously; :meth:`wait` blocks until done).

        Raises:
          OSError: the checkpoints folder cannot be written (the checkpoints saved before
            stay as they were; orbax's unfinished folder is removed by the next run).
        """
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.wait()
        with self._os_errors():
            self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
        self._unsealed = step

    def _step_dir(self, step: int) -> str:
        return os.path.join(checkpoints_dir(self.workdir), str(step))

    def _committed_steps(self) -> list[int]:
        """The steps of the committed checkpoints: orbax renames a finished save's temporary
        folder to its step, so a folder named by a step is complete (or being deleted)."""
        try:
            names = os.listdir(checkpoints_dir(self.workdir))
        except FileNotFoundError:
            return []
        return sorted(int(name) for name in names if name.isdigit())

    def _newest_step(self, skipped) -> int:
        """The newest committed step not in ``skipped``, or -1."""
        return max((step for step in self._committed_steps() if step not in skipped), default=-1)

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
        item = os.path.join(self._step_dir(step), ITEM_DIR)
        problem = None
        if multihost.is_writer():
            try:
                problem = verify_checksums(self._step_dir(step))
            except OSError as err:  # a file gone while it was read
                problem = _describe(err)
        if multihost.any_process(problem is not None):
            return None, problem or elsewhere
        try:
            saved = _item_metadata(item)
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
                with ocp.StandardCheckpointer() as checkpointer:
                    state = checkpointer.restore(item, target)
            else:
                state = _restore_part(item, target)
            state = _reshape_older(state, abstract_state, reshaped)
        except Exception as err:  # noqa: BLE001  any unreadable data: corrupt
            problem = _describe(err)
        if multihost.any_process(problem is not None):
            return None, problem or elsewhere
        return state, None

    def restore_latest(self, abstract_state, *, partial: bool = False):
        """The newest state that every process can restore, or None if there is none.

        Corrupt checkpoints on the way are quarantined (skipped by a reader); a committed
        checkpoint without checksums is sealed once restored. A checkpoint that fails while a
        newer one has appeared, or whose folder is gone, was deleted under the reader by the run
        training in the workdir (it keeps only its newest ``train.max_to_keep``): it is not
        corrupt, and the newest checkpoint is chosen again, up to ``VANISHED_RETRIES`` times.
        Every process reads the checkpoint process 0 chose.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings, the target.
          partial: ``abstract_state`` is a dict of some of the saved fields (for example
            ``{"params": ..., "step": ...}``); only those are read (not Adam's moments).

        Raises:
          CheckpointMismatchError: the newest readable checkpoint does not fit
            ``abstract_state`` (it is left in place).
          FileNotFoundError: the checkpoint chosen was deleted under the reader more than
            ``VANISHED_RETRIES`` times in a row.
        """
        skipped = set()  # corrupt checkpoints a reader leaves in place
        vanished = 0  # checkpoints deleted under the reader
        while True:
            step = multihost.value_of_process_0(self._newest_step(skipped))
            if step < 0:
                return None
            state, problem = self._restore(step, abstract_state, partial)
            if state is not None:
                sealed = os.path.exists(os.path.join(self._step_dir(step), CHECKSUMS_FILE))
                if not (sealed or self.read_only):
                    self._seal(step)
                return state
            superseded = not os.path.isdir(self._step_dir(step)) or self._newest_step(skipped) > step
            if multihost.any_process(superseded):  # deleted (or being deleted) by the training run
                vanished += 1
                if vanished > VANISHED_RETRIES:
                    raise FileNotFoundError(
                        f"the checkpoints in {checkpoints_dir(self.workdir)} were deleted while "
                        f"being read {vanished} times in a row: the run training there replaces "
                        "them faster than they can be read (small train.checkpoint_every and "
                        "train.max_to_keep); read again once it has ended")
                logging.info("checkpoint %s was replaced while being read; reading the newest",
                             self._step_dir(step))
                continue
            if self.read_only:
                logging.warning("checkpoint %s is corrupt (%s); using the one before it",
                                self._step_dir(step), problem)
                skipped.add(step)
            else:
                self._quarantine(step, problem)

    def latest_step(self) -> int | None:
        """Step of the newest saved checkpoint (None if none)."""
        return self.manager.latest_step()

    def _seal(self, step: int) -> None:
        """Write the checksums of checkpoint ``step``'s files into its folder."""
        folder = self._step_dir(step)
        write_json_atomic(os.path.join(folder, CHECKSUMS_FILE), _file_checksums(folder), indent=0)

    def wait(self) -> None:
        """Block until pending saves are on disk, then seal them with their checksums.

        Raises:
          OSError: a pending save could not be written.
        """
        with self._os_errors():
            self.manager.wait_until_finished()
        if (self._unsealed is not None and multihost.is_writer()
                and os.path.isdir(self._step_dir(self._unsealed))):
            faults.point("checkpoint_manifest", self._unsealed)
            self._seal(self._unsealed)
        self._unsealed = None

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        if self.read_only:
            return
        try:
            self.wait()
        finally:
            with self._os_errors():
                self.manager.close()


def _item_metadata(item_dir: str):
    """The tree of array metadata (shape, dtype, ...) a checkpoint's item folder holds."""
    handler = ocp.StandardCheckpointHandler()
    try:
        return handler.metadata(epath.Path(item_dir))
    finally:
        handler.close()


def _restore_part(item_dir: str, abstract_part):
    """Read only the fields of ``abstract_part`` (a dict of some saved fields) from a
    checkpoint's item folder: orbax's partial restore of a saved tree."""
    args = ocp.args.PyTreeRestore(item=abstract_part, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_part))
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(item_dir, args=args)


def _os_error_code(err: BaseException) -> int | None:
    """The errno behind an exception or the exceptions it was raised from: an ``OSError``'s,
    or the ``os_error_code`` of a tensorstore error message (orbax writes through tensorstore);
    None if there is none."""
    while err is not None:
        if isinstance(err, OSError) and err.errno:
            return err.errno
        match = re.search(r"os_error_code='(\d+)'", str(err))
        if match:
            return int(match.group(1))
        err = err.__cause__ or err.__context__
    return None


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
    restored = Checkpoints.reader(workdir).restore_latest(target, partial=True)
    if restored is None:
        raise FileNotFoundError(f"no restorable checkpoint in {checkpoints_dir(workdir)}")
    return restored["params"], int(restored["step"])
