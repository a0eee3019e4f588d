"""The objective: schedules, the exact (hard-spike) ELBO against float64 numpy, and the leak."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vscjax import objective
from vscjax.config import schedule
from vscjax.models import VSC

LOG2 = math.log(2.0)


@pytest.mark.parametrize("step", [0, 50, 100, 175, 300, 1000])
def test_schedules_match_closed_forms(step):
    t = min(max((step - 100) / 200, 0.0), 1.0)
    linear = schedule("linear", 400.0, start=50.0, begin_step=100, end_step=300)
    expo = schedule("exponential", 1000.0, start=10.0, begin_step=100, end_step=300)
    np.testing.assert_allclose(objective.schedule_value(linear, step), 50 + t * 350, rtol=1e-6)
    np.testing.assert_allclose(objective.schedule_value(expo, step), 10 * 100**t, rtol=1e-5)
    assert objective.schedule_value(schedule("constant", 7.0), step) == 7.0
    traced = jax.jit(lambda s: objective.schedule_value(linear, s))(jnp.int32(step))
    np.testing.assert_allclose(traced, 50 + t * 350, rtol=1e-6)


def _np_params(model):
    """Float64 copies of an MLP model's weights: (encoder layers, heads, decoder layers, out)."""
    as64 = lambda lin: (np.asarray(lin.kernel[...], np.float64), np.asarray(lin.bias[...], np.float64))  # noqa: E731
    enc = [as64(layer) for layer in model.encoder.layers]
    dec = [as64(layer) for layer in model.decoder.layers]
    return enc, as64(model.encoder.heads), dec, as64(model.decoder.out)


def _exact_neg_elbo_numpy(model, x, key, alpha):
    """Float64 forward pass, hard-spike sample from the same noise, exact KL."""
    enc, heads, dec, out = _np_params(model)
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    for w, b in enc:
        h = np.maximum(h @ w + b, 0)
    mu, logvar, logit = np.split(h @ heads[0] + heads[1], 3, axis=-1)
    key_eta, key_eps = jax.random.split(key)
    eta = np.asarray(jax.random.uniform(key_eta, mu.shape), np.float64)
    eps = np.asarray(jax.random.normal(key_eps, mu.shape), np.float64)
    gamma = 1 / (1 + np.exp(-logit))
    z = (eta > 1 - gamma) * (mu + np.exp(0.5 * logvar) * eps)  # the coupled hard spike
    g = z
    for w, b in dec:
        g = np.maximum(g @ w + b, 0)
    logits = g @ out[0] + out[1]
    target = np.asarray(x, np.float64).reshape(len(x), -1)
    recon = np.sum(np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits))), -1)
    slab = np.sum(gamma * 0.5 * (-logvar + np.exp(logvar) + mu**2 - 1), -1)
    spike = np.sum(gamma * np.log(gamma / alpha) + (1 - gamma) * np.log((1 - gamma) / (1 - alpha)), -1)
    return recon + slab + spike


def test_exact_neg_elbo_equals_float64_numpy_on_fixed_noise():
    model = VSC((8, 8, 1), 12, hidden=(24,), rngs=nnx.Rngs(params=3))
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    key = jax.random.key(11)
    got = objective.eval_terms(model, jnp.asarray(x), key, c=50.0, alpha=0.05)
    np.testing.assert_allclose(got["exact"], _exact_neg_elbo_numpy(model, x, key, 0.05), rtol=1e-4)
    np.testing.assert_allclose(got["leak"], got["exact"] - got["relaxed"], rtol=1e-6)


def _leaky_model(scale=1e6):
    """A model that hides the image in dimensions whose spikes are off (gamma ~ 5e-5).

    Pixel i goes to latent i with mu_i = 20 (x_i - 1/2), spike logit -10, tiny variance; the
    decoder reads logits scale * z_i. Under the hard spike z = 0 and every logit is 0; the
    relaxed mask at c=50 lets sigmoid(50 (eta - 1)) of mu through, enough to reconstruct.
    """
    d = 64
    model = VSC((8, 8, 1), d, hidden=(), rngs=nnx.Rngs(params=0))
    kernel = np.zeros((d, 3 * d), np.float32)
    kernel[:, :d] = 20 * np.eye(d)
    bias = np.concatenate([np.full(d, -10.0), np.full(d, -20.0), np.full(d, -10.0)]).astype(np.float32)
    model.encoder.heads.kernel[...] = jnp.asarray(kernel)
    model.encoder.heads.bias[...] = jnp.asarray(bias)
    model.decoder.out.kernel[...] = jnp.asarray(scale * np.eye(d, dtype=np.float32))
    model.decoder.out.bias[...] = jnp.zeros(d)
    return model


def test_relaxed_elbo_leaks_where_the_exact_one_does_not():
    model = _leaky_model()
    rng = np.random.default_rng(1)
    x = (rng.random((64, 8, 8, 1)) > 0.5).astype(np.float32)  # binary pixels
    terms = objective.eval_terms(model, jnp.asarray(x), jax.random.key(0), c=50.0, alpha=0.01)
    kl = np.asarray(terms["slab_kl"] + terms["spike_kl"])
    # Hard spikes (gamma = sigmoid(-10) = 4.5e-5) almost never fire: all logits 0, recon 64 log 2.
    np.testing.assert_allclose(np.mean(terms["exact"] - kl), 64 * LOG2, rtol=1e-3)
    leak = float(np.mean(terms["leak"]))
    assert leak > 5.0, leak  # the relaxed sample reconstructs part of the image
    # With a much sharper relaxation the leak shrinks.
    sharp = objective.eval_terms(model, jnp.asarray(x), jax.random.key(0), c=5000.0, alpha=0.01)
    assert float(np.mean(sharp["leak"])) < leak / 2
