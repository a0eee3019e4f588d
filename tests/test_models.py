"""Models: shapes of every architecture, likelihoods against numpy, the pseudo-input prior."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vscjax import models


@pytest.mark.parametrize(
    "architecture, image_shape",
    [("mlp", (8, 8, 1)), ("mlp", (28, 28, 1)), ("conv", (32, 32, 3)), ("conv", (64, 64, 3))],
)
@pytest.mark.parametrize("likelihood", models.LIKELIHOODS)
def test_shapes(architecture, image_shape, likelihood):
    model = models.VSC(image_shape, 10, architecture=architecture, hidden=(16,), conv_channels=8,
                       likelihood=likelihood, rngs=nnx.Rngs(params=0))
    x = jnp.full((2, *image_shape), 0.5)
    mu, logvar, logit = model.encode(x)
    assert mu.shape == logvar.shape == logit.shape == (2, 10)
    out = model.decode(mu)
    assert len(out) == models.likelihood_outputs(likelihood)
    assert all(o.shape == (2, *image_shape) for o in out)
    assert model.reconstruction_nll(mu, x).shape == (2,)


def test_conv_rejects_other_sizes():
    with pytest.raises(ValueError, match="32x32 or 64x64"):
        models.VSC((28, 28, 1), 4, architecture="conv", rngs=nnx.Rngs(params=0))


def test_gaussian_prior_model_has_no_spikes():
    model = models.VSC((8, 8, 1), 6, prior="gaussian", hidden=(8,), rngs=nnx.Rngs(params=0))
    assert model.encode(jnp.zeros((3, 8, 8, 1)))[2] is None


def test_bernoulli_nll_equals_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (4, 3, 3, 1)).astype(np.float32)
    x = rng.random((4, 3, 3, 1)).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expect = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))
    np.testing.assert_allclose(models.bernoulli_nll(logits, x), expect, rtol=1e-5)


def test_gaussian_nll_equals_numpy():
    rng = np.random.default_rng(1)
    mean, logvar, x = (rng.normal(size=(4, 2, 2, 3)).astype(np.float32) for _ in range(3))
    var = np.exp(logvar.astype(np.float64))
    expect = np.sum(0.5 * np.log(2 * math.pi * var) + (x - mean) ** 2 / (2 * var), axis=(1, 2, 3))
    np.testing.assert_allclose(models.gaussian_nll(mean, logvar, x), expect, rtol=1e-5)


def test_pseudo_input_prior_components_and_weights():
    model = models.VSC((8, 8, 1), 5, prior="pseudo_inputs", num_pseudo_inputs=4, pseudo_sharpness=10.0,
                       hidden=(8,), rngs=nnx.Rngs(params=0))
    mu, logvar, logit = model.prior.components(model.encoder)
    assert mu.shape == logvar.shape == logit.shape == (4, 5)
    _, _, raw = model.encoder(model.prior.pseudo_inputs[...])
    gamma_sharp = 1 / (1 + np.exp(-10 * (1 / (1 + np.exp(-np.asarray(raw, np.float64))) - 0.5)))
    np.testing.assert_allclose(jax.nn.sigmoid(logit), gamma_sharp, rtol=1e-5)
    x = jnp.asarray(np.random.default_rng(0).random((3, 8, 8, 1)), jnp.float32)
    w = model.prior.weights(x)
    a = np.asarray(model.prior.selector(x.reshape(3, -1)), np.float64)
    s = 1 / (1 + np.exp(-a))
    np.testing.assert_allclose(w, s / s.sum(-1, keepdims=True), rtol=1e-5)
    # A saturated selector (every sigmoid underflows to 0 in float32) still gives weights.
    model.prior.selector.bias[...] = jnp.full((4,), -300.0)
    w = model.prior.weights(x)
    assert np.all(np.isfinite(w)) and np.allclose(np.sum(w, -1), 1.0)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = models.VSC((8, 8, 1), 6, hidden=(16,), dtype="bfloat16", rngs=nnx.Rngs(params=0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    mu, _, _ = model.encode(jnp.full((2, 8, 8, 1), 0.5))
    assert mu.dtype == jnp.float32
    ref = models.VSC((8, 8, 1), 6, hidden=(16,), rngs=nnx.Rngs(params=0))
    np.testing.assert_allclose(mu, ref.encode(jnp.full((2, 8, 8, 1), 0.5))[0], rtol=5e-2, atol=5e-2)


def test_bfloat16_loss_within_one_percent_of_float32():
    """Mixed precision (bf16 matmuls and activations) changes the loss by < 1e-2 relative."""
    from vscjax import objective
    from vscjax.config import base_config

    config = base_config()
    config.objective.align_mode = "centroid"
    config.objective.align_weight.value = 1.0
    x = jnp.asarray(np.random.default_rng(0).random((32, 8, 8, 1)), jnp.float32)
    batch = {"image": x, "label": jnp.asarray(np.arange(32) % 4, jnp.int32)}
    losses = {}
    for dtype in ("float32", "bfloat16"):
        model = models.VSC((8, 8, 1), 24, hidden=(64,), dtype=dtype, rngs=nnx.Rngs(params=0))
        losses[dtype], _ = objective.loss_and_metrics(model, batch, jax.random.key(1), 0,
                                                      config.objective, 4)
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=1e-2)
    assert losses["bfloat16"].dtype == jnp.float32
