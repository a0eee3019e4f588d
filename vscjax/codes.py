"""Posterior codes of a set of images: the :class:`Codes` record, how it is computed, its export.

:func:`encode_images` runs the encoder over images in jitted batches: split over a mesh for the
evaluation (every process taking part), or on one device for ``vscjax.load``'s model.
:func:`save_codes` writes codes and labels to an ``.npz`` that numpy and PyTorch read.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np
from flax import nnx

from vscjax import evaluation_loop
from vscjax.atomic import replace_file
from vscjax.metrics import ACTIVE_THRESHOLD


@dataclasses.dataclass(frozen=True)
class Codes:
    """Posterior heads of a set of images, on the host."""

    mu: np.ndarray  # [N, L]
    logvar: np.ndarray  # [N, L]
    gamma: np.ndarray  # [N, L]; all ones for a plain VAE (every dimension active)
    spikes: bool  # False for a plain VAE

    @property
    def probe_features(self) -> np.ndarray:
        """gamma * mu: [N, L] (mu for a plain VAE)."""
        return self.gamma * self.mu

    @property
    def mean_code(self) -> np.ndarray:
        """The posterior mean code: slab mean where gamma > 0.5, else 0: [N, L]."""
        return np.where(self.gamma > ACTIVE_THRESHOLD, self.mu, 0.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames="graphdef")
def _batch_heads(params, batch_index, images, *, graphdef):
    """mu, logvar [B, L] and gamma [B, L] (None for a plain VAE) of one batch of images."""
    del batch_index  # encoding draws no noise
    mu, logvar, spike_logit = nnx.merge(graphdef, params).encode(images)
    return mu, logvar, None if spike_logit is None else jax.nn.sigmoid(spike_logit)


def encode_images(graphdef, params, images: np.ndarray, batch_size: int,
                  mesh: jax.sharding.Mesh | None = None) -> Codes:
    """The codes of images [N, H, W, C], in jitted batches (``evaluation_loop.map_batches``).

    Args:
      graphdef, params: the model (params replicated over ``mesh``, or on this process's
        default device).
      images: [N, H, W, C] float, values in [0, 1].
      batch_size: images per jitted call.
      mesh: the ``("data",)`` mesh every process of it encodes over; None: this process alone.

    Returns:
      Codes with mu, logvar and gamma [N, L] (gamma all ones for a plain VAE).
    """
    mu, logvar, gamma = evaluation_loop.map_batches(
        functools.partial(_batch_heads, graphdef=graphdef), params, (images,),
        batch_size=batch_size, mesh=mesh)
    if gamma is None:  # plain VAE: every dimension active
        return Codes(mu=mu, logvar=logvar, gamma=np.ones_like(mu), spikes=False)
    return Codes(mu=mu, logvar=logvar, gamma=gamma, spikes=True)


def save_codes(path: str, codes: Codes, labels: np.ndarray, split: str) -> str:
    """Write codes and labels to an ``.npz`` that numpy reads (``np.load(path)``) without pickle.

    Arrays: mu, logvar, gamma ([N, L] float32; gamma all ones for a plain VAE), labels ([N]
    int32) and split (a 0-d string array). Written whole (``atomic.replace_file``).

    Returns:
      The absolute path written.
    """
    path = os.path.abspath(path)
    with replace_file(path, "wb") as f:
        np.savez(f, mu=codes.mu, logvar=codes.logvar, gamma=codes.gamma,
                 labels=np.asarray(labels, np.int32), split=np.array(split))
    return path
