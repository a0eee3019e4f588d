"""Device mesh and shardings: the batch over ``"data"``, the latent dimension over ``"latent"``.

The mesh has two axes, ``("data", "latent")`` (:func:`make_mesh`). The batch is split over
``"data"`` and whole along ``"latent"``. Every parameter with a latent axis
(``models.latent_axes``: the encoder heads' columns, the decoder's first layer's rows, the
class-mask prior's logits), its gradient and its Adam moments are split along L over
``"latent"``, and so is every [B, L] activation; everything else is replicated. XLA inserts
the collectives: sums over the latent dimensions (KL, JSD, the decoder's first matmul) are
partial per device and then reduced across ``"latent"``, and gradients are reduced across
``"data"``, so batch statistics (the alignment loss's class means and pairs) are over the
global batch. With one device along ``"latent"`` this is plain data parallelism.

Multi-host (TPU pods, multi-node GPU): once ``vscjax.multihost.initialize`` has joined the
processes, ``jax.devices()`` lists the devices of all hosts, the mesh spans them, and each
process places only its own rows of every global batch (:func:`process_rows`,
:func:`global_batch`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
LATENT_AXIS = "latent"


def make_mesh(latent: int = 1, devices=None) -> Mesh:
    """The ``("data", "latent")`` mesh: ``latent`` devices along the latent axis, the rest along
    the batch (default devices: all devices of all hosts).

    Raises:
      ValueError: ``latent`` does not divide the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    if latent < 1 or len(devices) % latent:
        raise ValueError(f"mesh.latent {latent} does not divide the {len(devices)} devices")
    return jax.make_mesh((len(devices) // latent, latent), (DATA_AXIS, LATENT_AXIS),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def data_size(mesh: Mesh) -> int:
    """Devices along the batch axis: a global batch splits into this many shards."""
    return mesh.shape[DATA_AXIS]


def make_data_mesh(devices=None, *, explicit: bool = False) -> Mesh:
    """A one-axis ``("data",)`` mesh over ``devices`` (default: all devices of all hosts).

    Args:
      devices: the devices to use, default ``jax.devices()``.
      explicit: give the axis JAX's Explicit axis type (sharding in types) instead of Auto.
    """
    devices = list(jax.devices() if devices is None else devices)
    axis_type = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(axis_type,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``, the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Raise a clear error if a global batch does not split evenly over the mesh's batch axis."""
    shards = data_size(mesh)
    if batch_size % shards:
        raise ValueError(
            f"batch size {batch_size} does not split over {shards} devices; "
            f"use a multiple of {shards}"
        )


def _names(path) -> tuple:
    """The keys of a pytree path as plain names and indices, Variable ``.value`` left out."""
    names = []
    for key in path:
        name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", None)))
        if name != "value":
            names.append(name)
    return tuple(names)


def latent_spec(ndim: int, axis: int | None, mesh: Mesh) -> PartitionSpec:
    """``PartitionSpec`` of an array of ``ndim`` axes whose ``axis`` (None: none) is the latent
    one, on ``mesh``: split over ``"latent"`` if the mesh has that axis, else whole."""
    if axis is None or LATENT_AXIS not in mesh.axis_names:
        return PartitionSpec()
    spec = [None] * ndim
    spec[axis] = LATENT_AXIS
    return PartitionSpec(*spec)


def state_shardings(tree, mesh: Mesh, latent_axes: dict[tuple, int]):
    """Shardings of a train-state pytree (parameters, optimizer state, counters).

    A leaf whose path ends with a parameter path of ``latent_axes`` (``models.latent_axes``:
    the parameter itself, or its Adam moment) is split over ``"latent"`` along that axis;
    every other leaf is replicated.

    Args:
      tree: the state, or its shapes (``jax.eval_shape``).
      mesh: the run's mesh.
      latent_axes: {parameter path: axis of L}.

    Returns:
      A pytree of ``NamedSharding``s with ``tree``'s structure.
    """
    def leaf_sharding(path, leaf):
        names = _names(path)
        axis = next((a for p, a in latent_axes.items() if names[-len(p):] == p), None)
        return NamedSharding(mesh, latent_spec(len(getattr(leaf, "shape", ())), axis, mesh))

    return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def shard_batch(batch, mesh: Mesh):
    """Place a host (numpy) batch pytree on the mesh, split along the batch axis."""
    sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch arrays disagree on the batch size: {sorted(sizes)}")
    check_batch_divisible(sizes.pop(), mesh)
    return jax.device_put(batch, batch_sharding(mesh))


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
    """The rows of a global batch of ``batch_size`` that this process's devices hold.

    Args:
      sharding: the batch sharding (:func:`batch_sharding`).
      batch_size: rows of the global batch.

    Returns:
      [B_local] sorted row indices: the local data that :func:`global_batch` expects.
    """
    index_map = sharding.addressable_devices_indices_map((batch_size,))
    return np.unique(np.concatenate([np.arange(batch_size)[i[0]] for i in index_map.values()]))


def global_batch(local_rows: np.ndarray, sharding: NamedSharding, batch_size: int) -> jax.Array:
    """The global batch-sharded array of ``batch_size`` rows whose :func:`process_rows` are
    ``local_rows`` ([B_local, ...], on the host); every process passes its own rows."""
    return jax.make_array_from_process_local_data(sharding, local_rows,
                                                  (batch_size, *local_rows.shape[1:]))


def local_copy(tree):
    """This process's own whole copy of a pytree, each leaf on the process's first device: for
    computations one process does alone (pictures).

    A replicated leaf is read from this process's first device; a split one (the latent axis
    over ``"latent"``) is gathered: onto the first device when this process holds every shard,
    else from all processes (a collective: then every process must call this).
    """
    from jax.experimental import multihost_utils

    first = jax.local_devices()[0]

    def copy(x):
        if x.is_fully_replicated:
            return x.addressable_data(0)
        if x.is_fully_addressable:
            return jax.device_put(x, first)
        return jax.device_put(multihost_utils.process_allgather(x, tiled=True), first)

    return jax.tree.map(copy, tree)
