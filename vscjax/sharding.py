"""Device mesh and shardings for data parallelism with ``jax.jit`` + ``NamedSharding``.

One mesh axis, ``"data"``: the batch is split over it, parameters and optimizer state are
replicated, and XLA inserts the all-reduces, so batch statistics (the alignment loss's class
means and pairs) are over the global batch.

Multi-host (TPU pods, multi-node GPU): call :func:`initialize_distributed` in every process
before any other JAX call; ``jax.devices()`` then lists the devices of all hosts, the mesh
spans them, and each process feeds its own slice of the global batch
(``jax.make_array_from_process_local_data``, used by ``vscjax.data``).
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(**kwargs) -> None:
    """Start JAX's multi-process runtime (``jax.distributed.initialize``) when it is needed.

    On Cloud TPU and SLURM/Open MPI clusters the arguments are found automatically; elsewhere
    pass ``coordinator_address``, ``num_processes`` and ``process_id``. A no-op for a single
    process with no arguments.
    """
    if kwargs or jax.process_count() > 1:
        jax.distributed.initialize(**kwargs)


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
