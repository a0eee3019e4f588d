"""The one evaluation loop: a jitted function over a data set in fixed-size batches.

:func:`map_batches` runs a jitted function over a data set in batches of a fixed size, the last
one zero-padded (one compilation), and returns the per-sample outputs, padding dropped. With a
``("data",)`` mesh every batch is split over the mesh, each process places only its own rows of
it, and the outputs come back whole to every process: the in-training evaluation,
``vscjax.evaluate`` and the codes it exports. Without a mesh it runs on this process's default
device alone, with no collective, so that one process may call it by itself: ``vscjax.load``'s
model.

Batch ``i`` of an evaluation draws its noise from ``fold_in(eval_key(seed), i)``, and noise does
not depend on how a batch is split, so the numbers are the same on any number of devices and
processes. This module uses the models' bounds and the mesh, never the training loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vscjax import bounds, objective, rng, sharding


def eval_key(seed: int) -> jax.Array:
    """The key of every evaluation of a run (the "eval" stream of :mod:`vscjax.rng`): the same
    noise each time, so evaluations agree."""
    return rng.key(seed, "eval")


def _rows_or_zeros(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]``, with rows of zeros where ``index`` is past the end: [len(index), ...]."""
    out = np.zeros((len(index), *array.shape[1:]), array.dtype)
    real = index < len(array)
    out[real] = array[index[real]]
    return out


def map_batches(fn: Callable, params, arrays: Sequence[np.ndarray], *, batch_size: int,
                mesh: jax.sharding.Mesh | None = None):
    """Per-sample outputs of ``fn(params, batch_index, *batch)`` over a whole data set.

    Args:
      fn: a jitted function of ``params``, the batch's index i (an int32 scalar) and one
        [batch_size, ...] array per entry of ``arrays``; returns a pytree of [batch_size, ...]
        arrays (None leaves allowed).
      params: a pytree, replicated over ``mesh`` (or on this process's default device).
      arrays: host arrays [N, ...] with the same N.
      batch_size: rows per batch; with a mesh it must split over the mesh's devices, without
        one it shrinks to N for a smaller data set.
      mesh: the ``("data",)`` mesh: every process of it must call, each feeding its own rows
        (a collective). None: this process alone, on its default device.

    Returns:
      ``fn``'s pytree with numpy [N, ...] leaves (the same in every process).
    """
    n = len(arrays[0])
    if mesh is None:
        batch_size = min(batch_size, n)
        rows = np.arange(batch_size)
        place = lambda local_rows: local_rows  # noqa: E731  jit puts it on the default device
        gather = jax.device_get
    else:
        sharding.check_batch_divisible(batch_size, mesh)
        batch_sharding = sharding.batch_sharding(mesh)
        rows = sharding.process_rows(batch_sharding, batch_size)  # [B_local]
        place = lambda local_rows: sharding.global_batch(local_rows, batch_sharding, batch_size)  # noqa: E731
        gather = functools.partial(multihost_utils.process_allgather, tiled=True)
    outputs = []
    for i, start in enumerate(range(0, n, batch_size)):
        batch = [place(_rows_or_zeros(a, start + rows)) for a in arrays]  # [B, ...] each
        per_sample = gather(fn(params, np.int32(i), *batch))
        real = min(batch_size, n - start)
        outputs.append(jax.tree.map(lambda v, real=real: np.asarray(v)[:real], per_sample))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


@functools.partial(jax.jit, static_argnames=("graphdef", "seed", "alpha"))
def batch_eval_terms(params, batch_index, images, labels, c, *, graphdef, seed, alpha):
    """``bounds.eval_terms`` of one batch with its evaluation noise: dict of [B]."""
    key = jax.random.fold_in(eval_key(seed), batch_index)
    return bounds.eval_terms(nnx.merge(graphdef, params), images, labels, key, c=c, alpha=alpha)


def elbo_terms(graphdef, params, config, images: np.ndarray, labels: np.ndarray, *, step: int,
               mesh: jax.sharding.Mesh) -> dict:
    """Per-sample ``bounds.eval_terms`` of a data set at the training c of ``step``.

    Args:
      graphdef: the model's graph definition.
      params: the model's parameters, replicated over ``mesh``.
      config: the run's config (seed, objective, train.eval_batch_size).
      images: [N, H, W, C] float32.
      labels: [N] int32.
      step: the training step whose c the relaxed ELBO uses.
      mesh: the ``("data",)`` mesh.

    Returns:
      dict of [N] numpy arrays (see ``bounds.eval_terms``).
    """
    fn = functools.partial(batch_eval_terms, graphdef=graphdef, seed=config.seed,
                           alpha=config.objective.alpha)
    c = float(objective.schedule_value(config.objective.c, step))
    return map_batches(lambda p, i, x, y: fn(p, i, x, y, c), params, (images, labels),
                       batch_size=config.train.eval_batch_size, mesh=mesh)


def mean_terms(terms: dict) -> dict:
    """Means over the samples (float64) of per-sample terms: dict of floats."""
    return {name: float(np.mean(values, dtype=np.float64)) for name, values in terms.items()}


@functools.partial(jax.jit, static_argnames=("graphdef", "seed", "alpha", "num_samples"))
def _batch_iw_bound(params, batch_index, images, *, graphdef, seed, alpha, num_samples):
    """``bounds.iw_neg_log_likelihood`` of one batch with its own noise: [B]."""
    key = jax.random.fold_in(rng.key(seed, "iw"), batch_index)
    return bounds.iw_neg_log_likelihood(nnx.merge(graphdef, params), images, key, alpha=alpha,
                                        num_samples=num_samples)


def iw_bound(graphdef, params, config, images: np.ndarray, num_samples: int,
             mesh: jax.sharding.Mesh) -> np.ndarray:
    """Per-sample ``bounds.iw_neg_log_likelihood`` of a data set with ``num_samples`` samples
    each, in jitted batches split over ``mesh`` (the "iw" stream's noise): [N]."""
    bound = functools.partial(_batch_iw_bound, graphdef=graphdef, seed=config.seed,
                              alpha=config.objective.alpha, num_samples=num_samples)
    return map_batches(bound, params, (images,), batch_size=config.train.eval_batch_size, mesh=mesh)
