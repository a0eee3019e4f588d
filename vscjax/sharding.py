"""Device mesh and shardings for data parallelism with ``jax.jit`` + ``NamedSharding``.

One mesh axis, ``"data"``: the batch is split over it, parameters and optimizer state are
replicated, and XLA inserts the all-reduces, so batch statistics (the alignment loss's class
means and pairs) are over the global batch.

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
    """Raise a clear error if a global batch does not split evenly over the mesh's devices."""
    num_devices = mesh.devices.size
    if batch_size % num_devices:
        raise ValueError(
            f"batch size {batch_size} does not split over {num_devices} devices; "
            f"use a multiple of {num_devices}"
        )


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
    """This process's copy of a replicated pytree, each leaf on the process's first device:
    for computations one process does alone (pictures)."""
    return jax.tree.map(lambda x: x.addressable_data(0), tree)
