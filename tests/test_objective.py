"""The objective: schedules, the exact (hard-spike) ELBO against float64 numpy, and the leak."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import logsumexp

import numpy_reference as ref
from vscjax import objective
from vscjax.config import base_config, schedule
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


def _recon_numpy(model, x, key):
    """(recon NLL of the hard-spike sample from ``key``'s noise, mu, logvar, gamma), float64."""
    p = ref.params_of(model)
    mu, logvar, logit = ref.encode(p, x)
    key_eta, key_eps = jax.random.split(key)
    eta = np.asarray(jax.random.uniform(key_eta, mu.shape), np.float64)
    eps = np.asarray(jax.random.normal(key_eps, mu.shape), np.float64)
    z = ref.spike_mask(logit, eta, 1.0, "hard") * (mu + np.exp(0.5 * logvar) * eps)
    return ref.reconstruction_nll(p, z, x), mu, logvar, ref.sigmoid(logit)


def _bern_kl(g, p):
    return g * np.log(g / p) + (1 - g) * np.log((1 - g) / (1 - p))


def _exact_neg_elbo_numpy(model, x, key, alpha):
    """Float64 forward pass, hard-spike sample from the same noise, exact KL."""
    recon, mu, logvar, gamma = _recon_numpy(model, x, key)
    slab = np.sum(gamma * ref.gaussian_kl(mu, logvar), -1)
    spike = np.sum(_bern_kl(gamma, alpha), -1)
    return recon + slab + spike


def test_exact_neg_elbo_equals_float64_numpy_on_fixed_noise():
    model = VSC((8, 8, 1), 12, hidden=(24,), rngs=nnx.Rngs(params=3))
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    key = jax.random.key(11)
    got = objective.eval_terms(model, jnp.asarray(x), jnp.zeros(16, jnp.int32), key, c=50.0, alpha=0.05)
    np.testing.assert_allclose(got["exact"], _exact_neg_elbo_numpy(model, x, key, 0.05), rtol=1e-4)
    np.testing.assert_allclose(got["leak"], got["exact"] - got["relaxed"], rtol=1e-6, atol=1e-4)


def test_class_mask_bound_equals_float64_logsumexp_over_classes():
    """-log p(x) <= recon + slab KL - logsumexp_y(log(1/C) - spike KL_y): float64 numpy, loops
    over classes; plus the label-given and fixed-prior ELBOs and the regularisers."""
    num_classes, alpha = 4, 0.05
    model = VSC((8, 8, 1), 12, hidden=(24,), prior="class_mask", num_classes=num_classes,
                alpha=alpha, rngs=nnx.Rngs(params=3))
    rng = np.random.default_rng(2)
    model.prior.shared[...] = jnp.asarray(rng.normal(-2, 1, 12), jnp.float32)
    model.prior.offset[...] = jnp.asarray(rng.normal(0, 2, (num_classes, 12)), jnp.float32)
    x = rng.random((16, 8, 8, 1)).astype(np.float32)
    labels = np.arange(16) % num_classes
    key = jax.random.key(11)
    got = objective.eval_terms(model, jnp.asarray(x), jnp.asarray(labels, jnp.int32), key, c=50.0, alpha=alpha)

    recon, mu, logvar, gamma = _recon_numpy(model, x, key)
    slab = np.sum(gamma * ref.gaussian_kl(mu, logvar), -1)
    logits = np.asarray(model.prior.shared[...], np.float64) + np.asarray(model.prior.offset[...], np.float64)
    prior_p = 1 / (1 + np.exp(-logits))  # [C, L]
    spike = np.stack([np.sum(_bern_kl(gamma, prior_p[y]), -1) for y in range(num_classes)], -1)  # [B, C]
    bound = recon + slab - logsumexp(np.log(1 / num_classes) - spike, axis=-1)
    np.testing.assert_allclose(got["exact"], bound, rtol=1e-4)
    np.testing.assert_allclose(got["recon"] + got["slab_kl"] + got["spike_kl"] + got["component_kl"],
                               bound, rtol=1e-4)
    np.testing.assert_allclose(got["class_conditional_exact"],
                               recon + slab + spike[np.arange(16), labels], rtol=1e-4)
    np.testing.assert_allclose(got["fixed_prior_exact"], _exact_neg_elbo_numpy(model, x, key, alpha), rtol=1e-4)
    rho = prior_p.mean(-1)  # [C]
    sparsity = 12 * (rho * np.log(rho / alpha) + (1 - rho) * np.log((1 - rho) / (1 - alpha)))
    np.testing.assert_allclose(got["sparsity"], sparsity[labels], rtol=1e-4)
    offset = np.asarray(model.prior.offset[...], np.float64)
    np.testing.assert_allclose(got["class_prior_penalty"], np.sum(offset**2, -1)[labels], rtol=1e-5)
    pairs = sum(prior_p[a] * prior_p[b] for a in range(num_classes) for b in range(a + 1, num_classes))  # [L]
    sharing = np.sum((1 - np.prod(prior_p, 0) ** (1 / num_classes)) * pairs)
    np.testing.assert_allclose(got["partial_sharing"], np.full(16, sharing), rtol=1e-4)
    shared = np.asarray(model.prior.shared[...], np.float64)
    excess = np.maximum(prior_p - 1 / (1 + np.exp(-shared)), 0)  # [C, L]
    exclusivity = sum(np.sum(excess[a] * excess[b]) for a in range(num_classes) for b in range(a + 1, num_classes))
    np.testing.assert_allclose(got["class_exclusivity"], np.full(16, exclusivity), rtol=1e-4)
    # The mixture bound is never worse than the best single class plus log C.
    assert np.all(bound <= recon + slab + spike.min(-1) + np.log(num_classes) + 1e-6)


def test_nonnegative_class_offsets_only_raise_the_shared_logits():
    model = VSC((8, 8, 1), 5, hidden=(8,), prior="class_mask", num_classes=3, alpha=0.05,
                class_offsets="nonnegative", rngs=nnx.Rngs(params=0))
    prior = model.prior
    # Starts at (about) the fixed prior.
    np.testing.assert_allclose(prior.masks(), 0.05, atol=2e-4)
    prior.offset[...] = jnp.asarray(np.random.default_rng(0).normal(0, 5, (3, 5)), jnp.float32)
    h = np.asarray(prior.offsets())
    np.testing.assert_allclose(h, np.logaddexp(0, np.asarray(prior.offset[...], np.float64)), rtol=1e-5)
    assert np.all(np.asarray(prior.logits()) >= np.asarray(prior.shared[...])[None] - 1e-6)
    with pytest.raises(ValueError, match="unknown class offsets 'x'"):
        VSC((8, 8, 1), 5, hidden=(8,), prior="class_mask", num_classes=3, class_offsets="x",
            rngs=nnx.Rngs(params=0))


def test_partial_sharing_spares_class_specific_and_global_dimensions():
    big = 30.0  # logits of probability ~1 and ~0
    specific = np.full((4, 3), -big)
    specific[[0, 1, 3], [0, 1, 2]] = big  # each dimension used by one class
    assert float(objective.partial_sharing(jnp.asarray(specific, jnp.float32))) < 1e-6
    assert float(objective.partial_sharing(jnp.full((4, 3), big, jnp.float32))) < 1e-6  # global
    partial = np.full((4, 1), -big)
    partial[:2] = big  # two of four classes share the dimension
    assert float(objective.partial_sharing(jnp.asarray(partial, jnp.float32))) == pytest.approx(1.0, abs=1e-5)


def test_pseudo_input_bound_equals_float64_uniform_mixture():
    """The pseudo-input prior's reported bound: the uniform mixture of its K components."""
    alpha, k = 0.1, 3
    model = VSC((8, 8, 1), 10, hidden=(24,), prior="pseudo_inputs", num_pseudo_inputs=k,
                pseudo_sharpness=10.0, alpha=alpha, rngs=nnx.Rngs(params=4))
    x = np.random.default_rng(3).random((8, 8, 8, 1)).astype(np.float32)
    key = jax.random.key(5)
    got = objective.eval_terms(model, jnp.asarray(x), jnp.zeros(8, jnp.int32), key, c=50.0, alpha=alpha)
    recon, mu, logvar, gamma = _recon_numpy(model, x, key)
    p_mu, p_logvar, p_logit = ref.encode(ref.params_of(model), model.prior.pseudo_inputs[...])  # [K, L]
    p_gamma = 1 / (1 + np.exp(-10.0 * (1 / (1 + np.exp(-p_logit)) - 0.5)))
    kl = np.stack([np.sum(gamma * ref.gaussian_kl(mu, logvar, p_mu[i], p_logvar[i])
                          + _bern_kl(gamma, p_gamma[i]), -1)
                   for i in range(k)], -1)  # [B, K]
    np.testing.assert_allclose(got["exact"], recon - logsumexp(np.log(1 / k) - kl, axis=-1), rtol=1e-4)
    assert np.all(np.isnan(np.asarray(got["class_conditional_exact"])))


def test_class_mask_training_kl_reads_only_the_samples_own_class_row():
    """Training takes each sample's spike KL to its own class's row: with only class 0 in the
    batch (and no regulariser) no other row gets a gradient; the regularisers reach the rows of
    the classes present."""
    config = base_config()
    model = VSC((8, 8, 1), 6, hidden=(16,), prior="class_mask", num_classes=3, alpha=0.1,
                rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(0).random((8, 8, 8, 1)), jnp.float32)

    def offset_grad(labels, sparsity_weight, penalty):
        objective_config = config.objective.copy_and_resolve_references()
        objective_config.sparsity_weight, objective_config.class_prior_penalty = sparsity_weight, penalty

        def loss(params):
            batch = {"image": x, "label": jnp.asarray(labels, jnp.int32)}
            return objective.loss_and_metrics(nnx.merge(graphdef, params), batch, jax.random.key(0), 0,
                                              objective_config, 3)[0]

        grads = jax.grad(loss)(params)
        return np.asarray(grads["prior"]["offset"][...])  # [C, L]

    g = offset_grad([0] * 8, 0.0, 0.0)
    assert np.all(np.abs(g[0]) > 0) and np.all(g[1:] == 0)
    g = offset_grad([0] * 4 + [2] * 4, 1.0, 0.0)  # sparsity term: rows 0 and 2 only
    assert np.any(g[0] != 0) and np.all(g[1] == 0) and np.any(g[2] != 0)
    model.prior.offset[...] = jnp.ones((3, 6))  # the penalty's gradient is 2 offset / B per sample
    graphdef, params = nnx.split(model)
    with_penalty, without = offset_grad([1] * 8, 0.0, 0.5), offset_grad([1] * 8, 0.0, 0.0)
    np.testing.assert_allclose(with_penalty[1] - without[1], 0.5 * 2 * 1.0, rtol=1e-5)


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
    terms = objective.eval_terms(model, jnp.asarray(x), jnp.zeros(64, jnp.int32), jax.random.key(0), c=50.0, alpha=0.01)
    kl = np.asarray(terms["slab_kl"] + terms["spike_kl"])
    # Hard spikes (gamma = sigmoid(-10) = 4.5e-5) almost never fire: all logits 0, recon 64 log 2.
    np.testing.assert_allclose(np.mean(terms["exact"] - kl), 64 * LOG2, rtol=1e-3)
    leak = float(np.mean(terms["leak"]))
    assert leak > 5.0, leak  # the relaxed sample reconstructs part of the image
    # With a much sharper relaxation the leak shrinks.
    sharp = objective.eval_terms(model, jnp.asarray(x), jnp.zeros(64, jnp.int32), jax.random.key(0), c=5000.0, alpha=0.01)
    assert float(np.mean(sharp["leak"])) < leak / 2
