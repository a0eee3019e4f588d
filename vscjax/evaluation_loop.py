"""The one evaluation loop, for in-training evaluation and for ``vscjax.evaluate``.

:func:`map_batches` runs a jitted function over a data set in batches of a fixed size, the last
one zero-padded (one compilation). Every batch is split over the ``("data",)`` mesh and each
process places only its own rows of it, padding included; the per-sample outputs come back
whole to every process, padding dropped. Batch ``i`` draws its noise from
``fold_in(objective.eval_key(seed), i)`` and noise does not depend on how a batch is split, so
the numbers are the same on any number of devices and processes.

This module uses the models' math and the mesh, never the training loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vscjax import objective, sharding


def _rows_or_zeros(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]``, with rows of zeros where ``index`` is past the end: [len(index), ...]."""
    out = np.zeros((len(index), *array.shape[1:]), array.dtype)
    real = index < len(array)
    out[real] = array[index[real]]
    return out


def map_batches(fn: Callable, params, arrays: Sequence[np.ndarray], *, batch_size: int,
                mesh: jax.sharding.Mesh):
    """Per-sample outputs of ``fn(params, batch_index, *batch)`` over a whole data set.

    Args:
      fn: a jitted function of ``params``, the batch's index i (an int32 scalar) and one
        [batch_size, ...] batch-sharded array per entry of ``arrays``; returns a pytree of
        [batch_size, ...] arrays (None leaves allowed).
      params: a pytree replicated over ``mesh``.
      arrays: host arrays [N, ...] with the same N.
      batch_size: rows per batch; must split over the mesh's devices.
      mesh: the ``("data",)`` mesh.

    Returns:
      ``fn``'s pytree with numpy [N, ...] leaves, the same in every process.
    """
    sharding.check_batch_divisible(batch_size, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    rows = sharding.process_rows(batch_sharding, batch_size)  # [B_local]
    n = len(arrays[0])
    outputs = []
    for i, start in enumerate(range(0, n, batch_size)):
        batch = [sharding.global_batch(_rows_or_zeros(a, start + rows), batch_sharding, batch_size)
                 for a in arrays]  # [B, ...] each
        per_sample = multihost_utils.process_allgather(fn(params, np.int32(i), *batch), tiled=True)
        real = min(batch_size, n - start)
        outputs.append(jax.tree.map(lambda v, real=real: v[:real], per_sample))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


@functools.partial(jax.jit, static_argnames=("graphdef", "seed", "alpha"))
def batch_eval_terms(params, batch_index, images, labels, c, *, graphdef, seed, alpha):
    """``objective.eval_terms`` of one batch with its evaluation noise: dict of [B]."""
    key = jax.random.fold_in(objective.eval_key(seed), batch_index)
    return objective.eval_terms(nnx.merge(graphdef, params), images, labels, key, c=c, alpha=alpha)


def elbo_terms(graphdef, params, config, images: np.ndarray, labels: np.ndarray, *, step: int,
               mesh: jax.sharding.Mesh) -> dict:
    """Per-sample ``objective.eval_terms`` of a data set at the training c of ``step``.

    Args:
      graphdef: the model's graph definition.
      params: the model's parameters, replicated over ``mesh``.
      config: the run's config (seed, objective, train.eval_batch_size).
      images: [N, H, W, C] float32.
      labels: [N] int32.
      step: the training step whose c the relaxed ELBO uses.
      mesh: the ``("data",)`` mesh.

    Returns:
      dict of [N] numpy arrays (see ``objective.eval_terms``).
    """
    fn = functools.partial(batch_eval_terms, graphdef=graphdef, seed=config.seed,
                           alpha=config.objective.alpha)
    c = float(objective.schedule_value(config.objective.c, step))
    return map_batches(lambda p, i, x, y: fn(p, i, x, y, c), params, (images, labels),
                       batch_size=config.train.eval_batch_size, mesh=mesh)


def mean_terms(terms: dict) -> dict:
    """Means over the samples (float64) of per-sample terms: dict of floats."""
    return {name: float(np.mean(values, dtype=np.float64)) for name, values in terms.items()}
