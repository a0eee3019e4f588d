"""Where the training loop's batches come from: the host, or the training set on the devices.

The loop runs K steps per call of its jitted function (``train.steps_per_call``) and asks its
feed for the inputs of steps ``step .. step + K - 1``:

* :class:`DeviceFeed` (``data.placement = "device"``): the training set was placed on every
  device at start-up (:mod:`vscjax.resident`); a call's inputs are its batches' indices,
  [K, B] int32, and the step gathers and decodes each batch itself.
* :class:`HostFeed` (``data.placement = "host"``, or a set over ``data.device_budget_mib``):
  ``data.batch_iterator`` gathers every batch in host memory and places it on the devices
  from a background thread; a call's inputs are its K batches.

Both give the batches of ``data.BatchSampler`` at the same steps, so the two feeds train
bit-identical parameters.
"""

from __future__ import annotations

import logging

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vscjax import data, resident, sharding

MIB = 2**20


class HostFeed:
    """Batches gathered on the host and placed on the devices one by one, ahead of the step."""

    resident = None  # the step reads its batches from its inputs

    def __init__(self, dataset: data.Dataset, sampler: data.BatchSampler, start_step: int,
                 mesh: Mesh, prefetch: int):
        self._batches = data.batch_iterator(dataset, sampler, start_step=start_step,
                                            sharding=sharding.batch_sharding(mesh),
                                            prefetch=prefetch)

    def inputs(self, step: int, num_steps: int) -> list[dict]:
        """The batches of steps ``step .. step + num_steps - 1``.

        Args:
          step: the call's first step: the step after the previous call's last.
          num_steps: the call's length K.

        Returns:
          K batches {"image": [B, H, W, C] float32, "label": [B] int32}, split over the mesh.
        """
        batches = []
        for expected in range(step, step + num_steps):
            got, batch = next(self._batches)
            if got != expected:
                raise RuntimeError(f"host feed out of step: asked for step {expected}, has {got}")
            batches.append(batch)
        return batches

    def close(self) -> None:
        """Stop the loader thread."""
        self._batches.close()


class DeviceFeed:
    """Indices into the training set that is resident on the devices."""

    def __init__(self, resident_set: resident.ResidentData, sampler: data.BatchSampler, mesh: Mesh):
        self.resident = resident_set
        self._sampler = sampler
        # [K, B]: the batch axis split over the devices, like a host-fed batch.
        self._sharding = NamedSharding(mesh, PartitionSpec(None, sharding.DATA_AXIS))

    def inputs(self, step: int, num_steps: int) -> jax.Array:
        """The sampler's indices of steps ``step .. step + num_steps - 1``.

        Args:
          step: the call's first step (any: the indices are a pure function of the step).
          num_steps: the call's length K.

        Returns:
          [K, B] int32 indices into the resident set, the batch axis split over the mesh.
        """
        indices = np.stack([self._sampler.indices(s) for s in range(step, step + num_steps)])
        indices = indices.astype(np.int32)  # [K, B]
        return jax.make_array_from_callback(indices.shape, self._sharding, lambda i: indices[i])

    def close(self) -> None:
        """Nothing to stop: the set stays on the devices until the feed is dropped."""


def make_feed(data_config: ml_collections.ConfigDict, dataset: data.Dataset,
              sampler: data.BatchSampler, mesh: Mesh, start_step: int, *,
              encoded: tuple[np.ndarray, np.ndarray | None] | None = None) -> HostFeed | DeviceFeed:
    """The feed that ``data_config.placement`` asks for, falling back to host feeding when the
    encoded training set would take more than ``data_config.device_budget_mib`` per device.

    Args:
      data_config: the ``config.data`` block (placement, device_budget_mib, prefetch).
      dataset: the training set (host memory).
      sampler: its batch sampler.
      mesh: the run's mesh.
      start_step: the first step the loop will ask for.
      encoded: ``resident.encode_pixels(dataset.images)`` when the caller has it already.

    Returns:
      A :class:`DeviceFeed` or a :class:`HostFeed`; ``close()`` it when done.
    """
    budget = data_config.device_budget_mib * MIB
    num, shape = len(dataset.labels), dataset.images.shape[1:]
    at_least = resident.device_bytes(num, shape, 1)  # uint8 pixels: the least it can take
    if data_config.placement == "device" and at_least <= budget:
        codes, levels = encoded if encoded is not None else resident.encode_pixels(dataset.images)
        size = resident.device_bytes(num, shape, None if levels is None else len(levels))
        if size <= budget:
            logging.info("training set on the devices: %.1f MiB per device (%s pixels)",
                         size / MIB, "uint8" if levels is not None else "float32")
            placed = resident.place(codes, levels, dataset.labels, sharding.replicated(mesh))
            return DeviceFeed(placed, sampler, mesh)
        at_least = size
    if data_config.placement == "device":
        logging.warning("the training set needs at least %.1f MiB per device, more than "
                        "data.device_budget_mib=%d: feeding batches from the host",
                        at_least / MIB, data_config.device_budget_mib)
    return HostFeed(dataset, sampler, start_step, mesh, data_config.prefetch)
