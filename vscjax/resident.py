"""The training set resident on the devices: placed once, batches gathered inside the jitted step.

Host feeding gathers every batch in host memory and copies it to the devices (float32, one
transfer per array and step). Device feeding places the whole training set on every device
once, at start-up, and each step gathers its batch there from the indices that
``data.BatchSampler`` gives for (seed, step): the same batches, so a run is bit-identical to
host feeding and resumes the same way.

Images are stored compactly when they allow it: a set with at most 256 distinct pixel values
(every 8-bit source: IDX and TFDS pixels / 255, the digits' 0..16 / 16) is held as uint8
codes into a table of those values, and decoded inside the step by a table look-up, so every
pixel is exactly the float32 value host feeding would give (a division by 255 compiled by XLA
is not: it becomes a multiplication by the reciprocal, which rounds differently). Other sets
are held as float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_LEVELS = 256  # distinct pixel values that uint8 codes can index


class ResidentData(NamedTuple):
    """A data set on the devices (a pytree: pass it to jitted functions as an argument).

    Attributes:
      images: [N, H, W, C] uint8 codes into ``levels``, or float32 pixels when ``levels`` is None.
      levels: [V] float32 decode table (V <= 256), or None.
      labels: [N] int32.
    """

    images: jax.Array
    levels: jax.Array | None
    labels: jax.Array


def encode_pixels(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact uint8 codes of ``images`` and their decode table, when at most 256 values occur.

    Args:
      images: [N, H, W, C] float32.

    Returns:
      (codes [N, H, W, C] uint8, levels [V] float32) with ``levels[codes] == images`` bit for
      bit; or (images, None) when codes cannot give that: more than 256 distinct values, or
      values equal as floats but not in their bits (-0.0 beside 0.0, NaNs of two payloads).
    """
    levels = np.unique(images)  # sorted
    if len(levels) > MAX_LEVELS or np.any(np.signbit(levels) & (levels == 0)):
        return images, None  # too many values, or a -0.0 (a masked sum would give +0.0)
    codes = np.searchsorted(levels, images).astype(np.uint8)
    # NaN never equals itself, and -0.0 == 0.0 hides a sign: compare the bits.
    if not np.array_equal(levels[codes].view(np.uint32), images.view(np.uint32)):
        return images, None
    return codes, levels


def device_bytes(num_images: int, image_shape, pixel_levels: int | None) -> int:
    """Bytes one device holds for a resident set (see :func:`place`): uint8 codes and their
    table when the set has ``pixel_levels`` <= 256 distinct values (None: float32 pixels), and
    int32 labels."""
    pixel_bytes = 1 if pixel_levels else 4
    pixels = num_images * int(np.prod(image_shape, dtype=np.int64))
    return pixels * pixel_bytes + 4 * num_images + 4 * (pixel_levels or 0)


def place(images: np.ndarray, levels: np.ndarray | None, labels: np.ndarray,
          sharding: jax.sharding.Sharding) -> ResidentData:
    """Put an encoded set on the devices with ``sharding``.

    Works on a multi-process mesh: every process holds the same arrays and fills its own
    devices.

    Args:
      images: [N, H, W, C] uint8 codes (with ``levels``) or float32 pixels (``levels`` None).
      levels: [V] float32 decode table, or None.
      labels: [N] int32.
      sharding: where every array goes; replicated: every device holds the whole set.

    Returns:
      The :class:`ResidentData` on the devices.
    """
    def put(array):
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return ResidentData(put(images), None if levels is None else put(levels), put(labels))


DECODES = ("table", "compare")


def gather_batch(resident: ResidentData, indices: jax.Array, *, decode: str = "table") -> dict:
    """The batch at ``indices`` as float32 images and int32 labels (jit-able).

    Args:
      resident: the set on the devices.
      indices: [B] int32 indices into the set.
      decode: how uint8 codes become pixels, both exact: "table" looks each code up in the
        decode table (a gather: cheap on CPUs and GPUs); "compare" sums the table's entries
        masked by code == entry (256 selects per pixel and no gather: TPUs, whose gathers are
        slow and which XLA's TPU cost model prices as reading the whole table per element).

    Returns:
      {"image": [B, H, W, C] float32, "label": [B] int32}, bit-identical to the host's
      ``dataset.images[indices]`` and ``dataset.labels[indices]``.
    """
    if decode not in DECODES:
        raise ValueError(f"unknown pixel decode {decode!r}; expected one of {DECODES}")
    # Indices come from the sampler and codes index the table: both in bounds by construction.
    images = resident.images.at[indices].get(mode="promise_in_bounds")  # [B, H, W, C]
    if resident.levels is not None:
        codes = images.astype(jnp.int32)
        if decode == "table":
            images = resident.levels.at[codes].get(mode="promise_in_bounds")
        else:  # one entry matches; the others add +0.0, and no level is -0.0 (encode_pixels)
            entries = jnp.arange(resident.levels.shape[0], dtype=jnp.int32)
            images = jnp.sum(jnp.where(codes[..., None] == entries, resident.levels, 0.0), axis=-1)
    labels = resident.labels.at[indices].get(mode="promise_in_bounds")  # [B]
    return {"image": images, "label": labels}


def decode_for(platform: str) -> str:
    """The pixel decode for devices of ``platform`` ("tpu": compare; else: table)."""
    return "compare" if platform == "tpu" else "table"
