"""The evaluation's bounds: every model's exact bound against float64 NumPy, the leak of the
relaxed sample, and the importance-sampled bound (a density ratio, tighter with more samples)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import logsumexp

import numpy_reference as ref
from vscjax import bounds, spike_slab
from vscjax.models import VSC

LOG2 = math.log(2.0)

# ----------------------------------------------------------------------------- the exact bounds


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
    got = bounds.eval_terms(model, jnp.asarray(x), jnp.zeros(16, jnp.int32), key, c=50.0, alpha=0.05)
    np.testing.assert_allclose(got["exact_neg_elbo"], _exact_neg_elbo_numpy(model, x, key, 0.05), rtol=1e-4)
    np.testing.assert_allclose(got["leak"], got["exact_neg_elbo"] - got["relaxed_neg_elbo"], rtol=1e-6, atol=1e-4)


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
    got = bounds.eval_terms(model, jnp.asarray(x), jnp.asarray(labels, jnp.int32), key, c=50.0, alpha=alpha)

    recon, mu, logvar, gamma = _recon_numpy(model, x, key)
    slab = np.sum(gamma * ref.gaussian_kl(mu, logvar), -1)
    logits = np.asarray(model.prior.shared[...], np.float64) + np.asarray(model.prior.offset[...], np.float64)
    prior_p = 1 / (1 + np.exp(-logits))  # [C, L]
    spike = np.stack([np.sum(_bern_kl(gamma, prior_p[y]), -1) for y in range(num_classes)], -1)  # [B, C]
    bound = recon + slab - logsumexp(np.log(1 / num_classes) - spike, axis=-1)
    np.testing.assert_allclose(got["exact_neg_elbo"], bound, rtol=1e-4)
    np.testing.assert_allclose(got["recon"] + got["slab_kl"] + got["spike_kl"] + got["component_kl"],
                               bound, rtol=1e-4)
    np.testing.assert_allclose(got["class_conditional_neg_elbo"],
                               recon + slab + spike[np.arange(16), labels], rtol=1e-4)
    np.testing.assert_allclose(got["fixed_prior_exact_neg_elbo"], _exact_neg_elbo_numpy(model, x, key, alpha), rtol=1e-4)
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


def test_pseudo_input_bound_equals_float64_uniform_mixture():
    """The pseudo-input prior's reported bound: the uniform mixture of its K components."""
    alpha, k = 0.1, 3
    model = VSC((8, 8, 1), 10, hidden=(24,), prior="pseudo_inputs", num_pseudo_inputs=k,
                pseudo_sharpness=10.0, alpha=alpha, rngs=nnx.Rngs(params=4))
    x = np.random.default_rng(3).random((8, 8, 8, 1)).astype(np.float32)
    key = jax.random.key(5)
    got = bounds.eval_terms(model, jnp.asarray(x), jnp.zeros(8, jnp.int32), key, c=50.0, alpha=alpha)
    recon, mu, logvar, gamma = _recon_numpy(model, x, key)
    p_mu, p_logvar, p_logit = ref.encode(ref.params_of(model), model.prior.pseudo_inputs[...])  # [K, L]
    p_gamma = 1 / (1 + np.exp(-10.0 * (1 / (1 + np.exp(-p_logit)) - 0.5)))
    kl = np.stack([np.sum(gamma * ref.gaussian_kl(mu, logvar, p_mu[i], p_logvar[i])
                          + _bern_kl(gamma, p_gamma[i]), -1)
                   for i in range(k)], -1)  # [B, K]
    np.testing.assert_allclose(got["exact_neg_elbo"], recon - logsumexp(np.log(1 / k) - kl, axis=-1), rtol=1e-4)
    assert np.all(np.isnan(np.asarray(got["class_conditional_neg_elbo"])))


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
    model.encoder.heads.kernel[...] = jnp.asarray(kernel.reshape(d, 3, d))  # [in, head, L]
    model.encoder.heads.bias[...] = jnp.asarray(bias.reshape(3, d))
    model.decoder.out.kernel[...] = jnp.asarray(scale * np.eye(d, dtype=np.float32))
    model.decoder.out.bias[...] = jnp.zeros(d)
    return model


def test_relaxed_elbo_leaks_where_the_exact_one_does_not():
    model = _leaky_model()
    rng = np.random.default_rng(1)
    x = (rng.random((64, 8, 8, 1)) > 0.5).astype(np.float32)  # binary pixels
    terms = bounds.eval_terms(model, jnp.asarray(x), jnp.zeros(64, jnp.int32), jax.random.key(0), c=50.0, alpha=0.01)
    kl = np.asarray(terms["slab_kl"] + terms["spike_kl"])
    # Hard spikes (gamma = sigmoid(-10) = 4.5e-5) almost never fire: all logits 0, recon 64 log 2.
    np.testing.assert_allclose(np.mean(terms["exact_neg_elbo"] - kl), 64 * LOG2, rtol=1e-3)
    leak = float(np.mean(terms["leak"]))
    assert leak > 5.0, leak  # the relaxed sample reconstructs part of the image
    # With a much sharper relaxation the leak shrinks.
    sharp = bounds.eval_terms(model, jnp.asarray(x), jnp.zeros(64, jnp.int32), jax.random.key(0), c=5000.0, alpha=0.01)
    assert float(np.mean(sharp["leak"])) < leak / 2


# ----------------------------------------------------------------------------- importance sampling


def _mixtures(alpha):
    """Priors for the density-ratio test: fixed, classes sharing a slab, components with their own."""
    one = jnp.zeros((1, 1))
    logits = jnp.array([[2.0, -3.0], [-1.0, 0.5], [0.0, 0.0]])  # [K=3, L=2]
    return {
        "fixed": bounds.PriorMixture(one, one, jnp.full((1, 1), np.log(alpha / (1 - alpha))), jnp.zeros(1)),
        "shared_slab": bounds.PriorMixture(one, one, logits, jnp.log(jnp.array([0.2, 0.3, 0.5]))),
        # Component variances below q's, so that p / q is bounded and its mean estimable.
        "own_slabs": bounds.PriorMixture(jnp.array([[1.0, -1.0], [0.0, 0.5], [-0.5, 0.5]]),
                                            jnp.array([[-0.5, -1.0], [-0.6, -0.8], [-1.0, -0.5]]),
                                            logits, jnp.log(jnp.full(3, 1 / 3))),
    }


@pytest.mark.parametrize("prior", [None, "fixed", "shared_slab", "own_slabs"])
def test_log_prior_over_posterior_is_a_density_ratio(prior):
    """Under q: E[p / q] = 1 (both are normalised on the mixed measure); for the fixed prior
    (and the VAE) also E[log p / q] = -KL, the closed form."""
    mu, logvar = jnp.array([0.5, -1.0]), jnp.array([0.2, -0.3])  # q wider than N(0, 1/2)
    spikes = prior is not None
    logit = jnp.array([1.0, -0.5]) if spikes else None
    n, alpha = 400_000, 0.3
    if spikes:
        z = spike_slab.sample(jax.random.key(0), jnp.broadcast_to(mu, (n, 2)), logvar, logit,
                              c=1.0, mask="hard")
        kl = spike_slab.kl(mu, logvar, logit, alpha=alpha)
    else:
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.key(0), (n, 2))
        kl = spike_slab.gaussian_kl(mu, logvar)
    mixture = _mixtures(alpha)[prior] if spikes else None
    log_ratio = np.asarray(bounds.log_prior_over_posterior(z, mu, logvar, logit, mixture))  # [n]
    assert np.mean(np.exp(log_ratio)) == pytest.approx(1.0, abs=0.02)
    if prior in (None, "fixed"):
        assert np.mean(log_ratio) == pytest.approx(-float(kl), abs=0.02)


@pytest.mark.parametrize("prior", ["fixed", "class_mask", "pseudo_inputs"])
def test_iw_bound_is_below_the_models_bound_and_tightens(prior):
    """K = 1 estimates recon + KL(q || p), which for a mixture prior is at most the logsumexp
    bound eval_terms reports (and equal to it for the fixed prior); K = 256 is tighter."""
    model = VSC((8, 8, 1), 6, hidden=(16,), prior=prior, num_classes=3, num_pseudo_inputs=3,
                alpha=0.2, rngs=nnx.Rngs(params=0))
    if prior == "class_mask":  # distinct classes, so the mixture matters
        model.prior.offset[...] = jnp.asarray(np.random.default_rng(1).normal(0, 2, (3, 6)), jnp.float32)
    graphdef, params = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(0).random((8, 8, 8, 1)) > 0.5, jnp.float32)
    labels = jnp.arange(8, dtype=jnp.int32) % 3

    @jax.jit
    def estimates(params, keys):  # mean exact bound, mean K=1 estimate (one per key), K=256 bound
        model = nnx.merge(graphdef, params)
        elbo = jax.vmap(lambda k: bounds.eval_terms(model, x, labels, k, c=100.0,
                                                    alpha=0.2)["exact_neg_elbo"])(keys)

        def iw(k, num):
            return bounds.iw_neg_log_likelihood(model, x, k, alpha=0.2, num_samples=num)

        return jnp.mean(elbo), jnp.mean(jax.vmap(lambda k: iw(k, 1))(keys)), jnp.mean(iw(keys[0], 256))

    elbo, one, many = estimates(params, jax.random.split(jax.random.key(1), 512))
    if prior == "fixed":
        assert float(one) == pytest.approx(float(elbo), rel=0.01)  # K = 1 is the ELBO in expectation
    else:
        assert float(one) < float(elbo) + 0.01 * abs(float(elbo))
    assert float(many) < float(one) - 0.1
