"""Random streams: initialisation, training noise, data order and evaluation never share numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import load_config
from vscjax import evaluation_loop, rng, state, train


def _key_data(root, count: int) -> set[tuple[int, int]]:
    """The raw bits of ``fold_in(root, i)`` for i < count."""
    folded = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(root, i)))(jnp.arange(count))
    return set(map(tuple, np.asarray(folded).tolist()))


def test_initialisation_training_and_evaluation_draw_disjoint_keys(monkeypatch):
    """nnx.Rngs draws ``fold_in(root, n)`` for its n-th parameter and update k's noise is
    ``fold_in(trainer.key, k)``: with the seed's key as both roots, the first layers' weights
    and the first steps' noise came from the same keys (and the evaluation key was the key of
    step 24,301)."""
    config = load_config("tiny")
    roots = []
    real_rngs = nnx.Rngs

    def recording_rngs(**streams):
        roots.append(streams["params"])
        return real_rngs(**streams)

    monkeypatch.setattr(nnx, "Rngs", recording_rngs)
    state.initial_state(config, (8, 8, 1), 10)  # the model as the trainer builds it
    monkeypatch.undo()
    streams = {
        "init": _key_data(roots[0], 1_000),  # far more draws than a model makes
        "train": _key_data(train.Trainer(config).key, 100_000),  # updates
        "eval": _key_data(evaluation_loop.eval_key(config.seed), 1_000),  # evaluation batches
        "iw": _key_data(rng.key(config.seed, "iw"), 1_000),  # importance-sampling batches
    }
    union = set().union(*streams.values())
    assert len(union) == sum(len(keys) for keys in streams.values())


def test_numpy_streams_never_share_a_seed_sequence():
    """Data order (every epoch and part), the probe's images and the sampled pairs: no two
    seed sequences alike (NumPy reads [a, b] as [a, b, 0], so equal lists are not the test)."""
    def state_of(entropy):
        return tuple(np.random.SeedSequence(entropy).generate_state(4).tolist())

    seeds = [rng.numpy_seed(3, "data", epoch, part) for epoch in range(200) for part in range(11)]
    seeds += [rng.numpy_seed(3, "probe"), rng.numpy_seed(3, "pairs")]
    assert len({state_of(s) for s in seeds}) == len(seeds)


def test_unknown_stream_is_named():
    with pytest.raises(ValueError, match="unknown random stream 'noise'"):
        rng.key(0, "noise")
