"""The one evaluation loop: per-sample outputs that do not depend on devices or padding."""

import jax
import numpy as np
import pytest
from flax import nnx

from helpers import load_config
from vscjax import data, evaluation_loop, objective, sharding
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
    key = jax.random.fold_in(objective.eval_key(config.seed), 2)  # the last batch, 24 real rows
    last = np.concatenate([validation.images[96:], np.ones((24, 8, 8, 1), np.float32)])
    labels = np.concatenate([validation.labels[96:], np.zeros(24, np.int32)])
    direct = objective.eval_terms(model, last, labels, key, c=c, alpha=config.objective.alpha)
    np.testing.assert_allclose(terms["exact"][96:], np.asarray(direct["exact"])[:24], rtol=1e-5)


def test_a_batch_that_does_not_split_over_the_devices_is_named():
    config, validation, graphdef, params = _model_and_data()
    with pytest.raises(ValueError, match="batch size 50 does not split over 8 devices"):
        evaluation_loop.map_batches(lambda p, i, x: x, params, (validation.images,), batch_size=50,
                                    mesh=sharding.make_data_mesh())
