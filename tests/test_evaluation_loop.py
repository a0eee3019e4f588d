"""The one evaluation loop: per-sample outputs that do not depend on devices or padding."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from helpers import load_config
from vscjax import bounds, data, evaluation_loop, objective, sharding
from vscjax.state import initial_state


def _model_and_data():
    config = load_config("tiny", train__eval_batch_size=48)  # 120 images: 48 + 48 + 24 (padded)
    validation = data.load("digits", "digits", "validation")
    graphdef, state, _ = initial_state(config, validation.images.shape[1:], validation.num_classes)
    return config, validation, graphdef, state.params


def _terms(config, validation, graphdef, params, devices):
    mesh = sharding.make_data_mesh(devices)
    params = jax.device_put(params, sharding.replicated(mesh))
    return evaluation_loop.elbo_terms(graphdef, params, config, validation.images, validation.labels,
                                      step=0, mesh=mesh)


def test_per_sample_terms_are_the_same_on_one_and_on_eight_devices():
    config, validation, graphdef, params = _model_and_data()
    one = _terms(config, validation, graphdef, params, jax.devices()[:1])
    eight = _terms(config, validation, graphdef, params, jax.devices())
    assert one.keys() == eight.keys()
    for name in one:
        assert one[name].shape == (120,), name
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-6, err_msg=name)


def test_batch_i_uses_its_own_noise_and_padding_changes_no_real_sample():
    config, validation, graphdef, params = _model_and_data()
    terms = _terms(config, validation, graphdef, params, jax.devices())
    model = nnx.merge(graphdef, params)
    c = objective.schedule_value(config.objective.c, 0)
    key = jax.random.fold_in(evaluation_loop.eval_key(config.seed), 2)  # the last batch, 24 real rows
    last = np.concatenate([validation.images[96:], np.ones((24, 8, 8, 1), np.float32)])
    labels = np.concatenate([validation.labels[96:], np.zeros(24, np.int32)])
    direct = bounds.eval_terms(model, last, labels, key, c=c, alpha=config.objective.alpha)
    np.testing.assert_allclose(terms["exact_neg_elbo"][96:], np.asarray(direct["exact_neg_elbo"])[:24], rtol=1e-5)


def test_a_batch_that_does_not_split_over_the_devices_is_named():
    config, validation, graphdef, params = _model_and_data()
    with pytest.raises(ValueError, match="batch size 50 does not split over 8 devices"):
        evaluation_loop.map_batches(lambda p, i, x: x, params, (validation.images,), batch_size=50,
                                    mesh=sharding.make_data_mesh())


def test_without_a_mesh_this_process_alone_gives_the_same_per_sample_outputs(monkeypatch):
    """``vscjax.load``'s runner: no mesh, no collective (one process may call it alone), batches
    cut at the data set's size, padding dropped; the numbers of the sharded run."""
    config, validation, graphdef, params = _model_and_data()
    fn = functools.partial(evaluation_loop.batch_eval_terms, graphdef=graphdef, seed=config.seed,
                           alpha=config.objective.alpha)
    run = lambda p, i, x, y: fn(p, i, x, y, 10.0)  # noqa: E731
    mesh = sharding.make_data_mesh()
    sharded = evaluation_loop.map_batches(run, jax.device_put(params, sharding.replicated(mesh)),
                                          (validation.images, validation.labels), batch_size=48, mesh=mesh)

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective without a mesh")

    monkeypatch.setattr(evaluation_loop.multihost_utils, "process_allgather", no_collective)
    alone = evaluation_loop.map_batches(run, params, (validation.images, validation.labels), batch_size=48)
    for name in sharded:
        assert alone[name].shape == (120,), name
        np.testing.assert_allclose(alone[name], sharded[name], rtol=1e-5, atol=1e-5, err_msg=name)
    few = evaluation_loop.map_batches(run, params, (validation.images[:5], validation.labels[:5]),
                                      batch_size=48)  # one batch of 5, nothing padded
    np.testing.assert_allclose(few["recon"], alone["recon"][:5], rtol=1e-5)
