"""Named random streams: every use of randomness in a run draws from a stream of its own.

A stream is the run's seed combined with the stream's salt, and nothing else combines with
the bare seed, so two uses can never draw the same numbers, whatever the step, batch or
sample count:

    stream  what it draws                               how
    init    parameter initialisation                    nnx.Rngs(params=key(seed, "init"))
    train   the noise (eta, eps) of each training step  fold_in(key(seed, "train"), step)
    data    the order of the training batches (numpy)   default_rng(numpy_seed(seed, "data", epoch, part))
    eval    the noise of every evaluation               fold_in(key(seed, "eval"), batch)
    iw      the samples of the importance-sampled bound fold_in(key(seed, "iw"), batch)
    probe   the linear probe's training images (numpy)  default_rng(numpy_seed(seed, "probe"))
    pairs   the sampled pairs of the Jaccard means      default_rng(numpy_seed(seed, "pairs"))
    prior_samples  the samples of plots/prior_samples.png  key(seed, "prior_samples")

Three seeds never depend on the run: ``data.VALIDATION_SEED`` (which training images are held
out for validation), ``data.DIGITS_SPLIT_SEED`` (the digits' train/test split) and
``shapes.TEST_SPLIT_SEED`` (the synthetic shapes' train/test split).
"""

from __future__ import annotations

import jax

SALTS = {"init": 1, "train": 2, "data": 3, "eval": 4, "iw": 5, "probe": 6, "pairs": 7, "prior_samples": 8}


def _salt(stream: str) -> int:
    if stream not in SALTS:
        raise ValueError(f"unknown random stream {stream!r}; expected one of {sorted(SALTS)}")
    return SALTS[stream]


def key(seed: int, stream: str) -> jax.Array:
    """The JAX key of ``stream`` for a run of ``seed``: ``fold_in(key(seed), salt)``."""
    return jax.random.fold_in(jax.random.key(seed), _salt(stream))


def numpy_seed(seed: int, stream: str, *indices: int) -> list[int]:
    """Entropy for ``numpy.random.default_rng``: ``[salt, seed, *indices]``.

    NumPy's SeedSequence reads ``[a, b]`` and ``[a, b, 0]`` alike, so every caller of one
    stream passes the same number of indices.
    """
    return [_salt(stream), seed, *indices]
