"""spike_slab.py against independent computations: float64 numpy, Monte Carlo, known values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from vscjax import spike_slab


def _params(seed, shape, spread=2.0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, spread, shape).astype(np.float32)
    logvar = rng.normal(0, 1.0, shape).astype(np.float32)
    logit = rng.normal(0, 3.0, shape).astype(np.float32)
    return mu, logvar, logit


def _kl_numpy(mu, logvar, logit, alpha, prior_mu=0.0, prior_logvar=0.0):
    """The closed form of docs/design.md written directly in float64."""
    mu, logvar, logit = (np.asarray(a, np.float64) for a in (mu, logvar, logit))
    gamma = 1.0 / (1.0 + np.exp(-logit))
    var, prior_var = np.exp(logvar), np.exp(prior_logvar)
    slab = gamma * (
        0.5 * (prior_logvar - logvar) + (var + (mu - prior_mu) ** 2) / (2 * prior_var) - 0.5
    )
    spike = gamma * np.log(gamma / alpha) + (1 - gamma) * np.log((1 - gamma) / (1 - alpha))
    return np.sum(slab + spike, axis=-1)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5, 0.9])
def test_kl_equals_float64_formula(alpha):
    mu, logvar, logit = _params(0, (16, 50))
    got = spike_slab.kl(mu, logvar, logit, alpha=alpha)
    assert got.shape == (16,)
    np.testing.assert_allclose(got, _kl_numpy(mu, logvar, logit, alpha), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_kl_matches_monte_carlo_of_the_mixed_measure(alpha):
    """E_q[log dq/dp] by sampling the spike-and-slab posterior in numpy (not with `sample`).

    The Radon-Nikodym derivative dq/dp is (1-gamma)/(1-alpha) at z = 0 (the atoms) and
    gamma N(z; mu, s^2) / (alpha N(z; 0, 1)) for z != 0 (the densities).
    """
    rng = np.random.default_rng(1)
    mu, logvar, logit = _params(2, (4, 6), spread=1.0)
    gamma = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    sigma = np.exp(0.5 * logvar.astype(np.float64))
    n = 200_000
    active = rng.random((n,) + mu.shape) < gamma  # [n, B, L]
    z = mu + sigma * rng.standard_normal((n,) + mu.shape)
    log_q_slab = -0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma)  # common 2pi cancels
    log_p_slab = -0.5 * z**2
    log_ratio = np.where(
        active,
        np.log(gamma / alpha) + log_q_slab - log_p_slab,
        np.log((1 - gamma) / (1 - alpha)),
    ).sum(-1)  # [n, B]
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(n)
    got = np.asarray(spike_slab.kl(mu, logvar, logit, alpha=alpha))
    assert np.all(np.abs(got - estimate) < 5 * stderr + 1e-4), (got, estimate, stderr)


def test_kl_is_zero_when_posterior_is_the_prior():
    alpha = 0.2
    shape = (3, 7)
    logit = np.full(shape, np.log(alpha / (1 - alpha)), np.float32)
    got = spike_slab.kl(np.zeros(shape), np.zeros(shape), logit, alpha=alpha)
    np.testing.assert_allclose(got, 0.0, atol=1e-5)
    assert np.all(np.asarray(spike_slab.kl(*_params(3, shape), alpha=alpha)) > 0)


def test_kl_to_prior_with_fixed_prior_equals_kl():
    mu, logvar, logit = _params(4, (8, 30))
    alpha = 0.03
    general = spike_slab.kl_to_prior(
        mu, logvar, logit, 0.0, 0.0, np.log(alpha / (1 - alpha)).astype(np.float32)
    )
    np.testing.assert_allclose(general, spike_slab.kl(mu, logvar, logit, alpha=alpha), rtol=1e-6)


def test_kl_to_prior_broadcasts_over_prior_components():
    mu, logvar, logit = _params(5, (6, 1, 12))  # posterior [B, 1, L]
    pmu, plogvar, plogit = _params(6, (4, 12))  # K prior components [K, L]
    got = spike_slab.kl_to_prior(mu, logvar, logit, pmu, plogvar, plogit)
    assert got.shape == (6, 4)
    for k in range(4):
        pgamma = 1 / (1 + np.exp(-plogit[k].astype(np.float64)))
        expect = _kl_numpy(mu[:, 0], logvar[:, 0], logit[:, 0], pgamma, pmu[k], plogvar[k])
        np.testing.assert_allclose(got[:, k], expect, rtol=1e-4, atol=1e-4)


def test_slab_and_spike_parts_add_up():
    mu, logvar, logit = _params(7, (5, 9))
    plogit = spike_slab.alpha_logit(0.1)
    total = spike_slab.kl_to_prior(mu, logvar, logit, 0.0, 0.0, plogit)
    parts = spike_slab.slab_kl_to_prior(mu, logvar, logit, 0.0, 0.0) + spike_slab.spike_kl_to_prior(
        logit, plogit
    )
    np.testing.assert_allclose(total, parts, rtol=1e-6)


def test_spike_kl_to_components_equals_float64_elementwise():
    rng = np.random.default_rng(12)
    logit = rng.normal(0, 4, (5, 300)).astype(np.float32)
    logit[0, :10] = 40.0  # saturated: gamma rounds to 1 in float32
    prior = rng.normal(-3, 3, (7, 300)).astype(np.float32)
    got = spike_slab.spike_kl_to_components(jnp.asarray(logit), jnp.asarray(prior))  # [5, 7]
    g = 1 / (1 + np.exp(-logit.astype(np.float64)))[:, None, :]
    p = 1 / (1 + np.exp(-prior.astype(np.float64)))[None]
    log_g, log_1mg = -np.logaddexp(0, -logit.astype(np.float64)), -np.logaddexp(0, logit.astype(np.float64))
    expect = np.sum(g * (log_g[:, None] - np.log(p)) + (1 - g) * (log_1mg[:, None] - np.log1p(-p)), -1)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[:, 2], spike_slab.spike_kl_to_prior(logit, prior[2]), rtol=1e-4, atol=1e-3)


def test_mixture_kl_parts_add_up_to_the_logsumexp():
    rng = np.random.default_rng(13)
    slab, spike = rng.gamma(2, 5, (6, 1)), rng.gamma(2, 5, (6, 4))
    spike[0] = [0.0, 500.0, 900.0, 2000.0]  # one component dominates: weights underflow
    log_w = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    parts = spike_slab.mixture_kl_parts(jnp.asarray(slab, jnp.float32), jnp.asarray(spike, jnp.float32),
                                        jnp.asarray(log_w, jnp.float32))
    expect = -logsumexp(log_w - slab - spike, axis=-1)
    np.testing.assert_allclose(sum(parts), expect, rtol=1e-5)
    assert all(np.all(np.isfinite(p)) for p in parts)
    assert np.all(np.asarray(parts[2]) >= -1e-6) and np.all(np.asarray(parts[2]) <= np.log(10) + 1e-5)
    # One component: the KL itself and no component cost.
    single = spike_slab.mixture_kl_parts(jnp.ones((3, 1)), 2 * jnp.ones((3, 1)), jnp.zeros(1))
    np.testing.assert_allclose(np.stack(single), [[1, 1, 1], [2, 2, 2], [0, 0, 0]], atol=1e-6)


def test_gaussian_kl_equals_formula():
    mu, logvar, _ = _params(8, (4, 10))
    expect = 0.5 * np.sum(np.exp(logvar) + mu.astype(np.float64) ** 2 - 1 - logvar, -1)
    np.testing.assert_allclose(spike_slab.gaussian_kl(mu, logvar), expect, rtol=1e-5)


@pytest.mark.parametrize("mask", spike_slab.MASKS)
def test_extreme_parameters_give_finite_values_and_gradients(mask):
    logit = jnp.array([[-50.0, 50.0, -50.0, 50.0, 0.0]])
    logvar = jnp.array([[-30.0, -30.0, 30.0, 30.0, 0.0]])
    mu = jnp.array([[3.0, -3.0, 0.0, 1.0, 0.5]])

    def total(mu, logvar, logit):
        z = spike_slab.sample(jax.random.key(0), mu, logvar, logit, c=100.0, mask=mask)
        return spike_slab.kl(mu, logvar, logit, alpha=0.01).sum() + jnp.sum(z)

    value, grads = jax.value_and_grad(total, argnums=(0, 1, 2))(mu, logvar, logit)
    assert np.isfinite(value)
    for g in grads:
        assert np.all(np.isfinite(g))


def test_sample_spike_fraction_and_slab_moments():
    """At large c, the fraction of (near) zeros is 1 - gamma; active coordinates are N(mu, s^2)."""
    n = 100_000
    gamma = np.array([0.1, 0.5, 0.9], np.float32)
    logit = np.log(gamma / (1 - gamma))
    mu = np.array([2.0, -1.0, 0.5], np.float32)
    logvar = np.log(np.array([0.25, 1.0, 4.0], np.float32))
    tile = lambda a: jnp.broadcast_to(a, (n, 3))  # noqa: E731
    z = np.asarray(
        spike_slab.sample(jax.random.key(42), tile(mu), tile(logvar), tile(logit), c=1e5)
    )
    off = np.abs(z) < 1e-6
    # Binomial standard error at n = 1e5 is <= 0.0016; 0.01 is > 6 standard errors.
    np.testing.assert_allclose(off.mean(0), 1 - gamma, atol=0.01)
    for j in range(3):
        active = z[~off[:, j], j]
        sd = np.sqrt(np.exp(logvar[j]))
        assert abs(active.mean() - mu[j]) < 5 * sd / np.sqrt(active.size)
        assert abs(active.std() / sd - 1) < 0.03


def test_relaxed_sample_equals_the_formula():
    mu, logvar, logit = _params(9, (3, 4))
    key = jax.random.key(7)
    k_eta, k_eps = jax.random.split(key)
    eta = np.asarray(jax.random.uniform(k_eta, mu.shape), np.float64)
    eps = np.asarray(jax.random.normal(k_eps, mu.shape), np.float64)
    gamma = 1 / (1 + np.exp(-logit.astype(np.float64)))
    c = 37.0
    expect = 1 / (1 + np.exp(-c * (eta + gamma - 1))) * (mu + np.exp(0.5 * logvar) * eps)
    np.testing.assert_allclose(spike_slab.sample(key, mu, logvar, logit, c=c), expect, rtol=1e-4, atol=1e-5)


def test_straight_through_is_hard_forward_and_relaxed_backward():
    mu, logvar, logit = _params(10, (5, 6))
    eta = np.random.default_rng(0).random(mu.shape).astype(np.float32)
    eps = np.zeros_like(mu)

    def draw(mask):
        return lambda s: spike_slab.sample_from_noise(eta, eps, mu, logvar, s, c=20.0, mask=mask)

    np.testing.assert_array_equal(draw("straight_through")(logit), draw("hard")(logit))
    np.testing.assert_array_equal(np.unique(draw("hard")(logit) != 0), [False, True])
    g_st = jax.grad(lambda s: jnp.sum(draw("straight_through")(s)))(logit)
    g_relaxed = jax.grad(lambda s: jnp.sum(draw("relaxed")(s)))(logit)
    np.testing.assert_allclose(g_st, g_relaxed, rtol=1e-6)
    assert np.all(jax.grad(lambda s: jnp.sum(draw("hard")(s)))(logit) == 0)


def test_hard_mask_is_on_with_probability_gamma():
    """Monte Carlo: the hard spike 1[eta > 1 - gamma] is a Bernoulli(gamma) draw."""
    n = 200_000
    gamma = np.array([1e-3, 0.05, 0.3, 0.5, 0.8, 0.999], np.float32)
    logit = np.log(gamma / (1 - gamma))
    eta = jax.random.uniform(jax.random.key(3), (n, gamma.size))
    on = np.asarray(spike_slab.spike_mask(eta, jnp.broadcast_to(logit, eta.shape), c=1.0, mask="hard"))
    assert set(np.unique(on)) <= {0.0, 1.0}
    se = np.sqrt(gamma * (1 - gamma) / n)
    np.testing.assert_array_less(np.abs(on.mean(0) - gamma), 5 * se + 1e-5)


def test_relaxed_mask_converges_to_the_hard_mask_on_the_same_noise():
    """The coupling: as c grows, sigmoid(c (eta + gamma - 1)) -> 1[eta > 1 - gamma], draw by draw.

    With the uncoupled draw 1[eta < gamma] the two masks would disagree on about
    2 gamma (1 - gamma) of the draws at any c.
    """
    rng = np.random.default_rng(4)
    logit = rng.normal(0.0, 2.0, (64, 50)).astype(np.float32)
    eta = rng.random((64, 50)).astype(np.float32)
    hard = np.asarray(spike_slab.spike_mask(eta, logit, c=1.0, mask="hard"))
    gap = 1 - 1 / (1 + np.exp(-logit.astype(np.float64)))  # 1 - gamma
    margin = np.abs(eta - gap)
    previous = np.inf
    for c in (10.0, 100.0, 1000.0, 1e4):
        relaxed = np.asarray(spike_slab.spike_mask(eta, logit, c=c, mask="relaxed"), np.float64)
        far = margin > 10 / c  # draws not within 10 / c of the switching point
        np.testing.assert_allclose(relaxed[far], hard[far], atol=1e-4)
        disagreement = np.mean(np.abs(relaxed - hard))
        assert disagreement < previous
        previous = disagreement
    assert previous < 1e-3
    # On and off agree for every draw that is not at the switching point, at any gamma.
    assert np.all(((relaxed > 0.5) == (hard == 1)) | (margin < 1e-3))


def test_straight_through_forward_is_the_hard_mask_gradient_the_relaxed_one():
    """On the same eta: the forward value equals 1[eta > 1 - gamma]; the gradient equals the
    relaxed mask's, so the gradient of a dimension that is on is read where it is on."""
    rng = np.random.default_rng(5)
    logit = jnp.asarray(rng.normal(0.0, 2.0, (16, 20)), jnp.float32)
    eta = jnp.asarray(rng.random((16, 20)), jnp.float32)
    st = lambda s: spike_slab.spike_mask(eta, s, c=25.0, mask="straight_through")  # noqa: E731
    relaxed = lambda s: spike_slab.spike_mask(eta, s, c=25.0, mask="relaxed")  # noqa: E731
    np.testing.assert_array_equal(st(logit), spike_slab.spike_mask(eta, logit, c=25.0, mask="hard"))
    np.testing.assert_array_equal(st(logit), np.asarray(eta) > 1 - np.asarray(jax.nn.sigmoid(logit)))
    weights = jnp.asarray(rng.normal(size=(16, 20)), jnp.float32)
    g_st = jax.grad(lambda s: jnp.sum(weights * st(s)))(logit)
    g_relaxed = jax.grad(lambda s: jnp.sum(weights * relaxed(s)))(logit)
    np.testing.assert_allclose(g_st, g_relaxed, rtol=1e-6)
    # Where the hard mask is on, the relaxed mask is above 1/2 (its steep part is at the same eta).
    on = np.asarray(st(logit)) == 1
    assert np.all(np.asarray(relaxed(logit))[on] >= 0.5)


def test_unknown_mask_is_named():
    with pytest.raises(ValueError, match="unknown spike mask 'soft'"):
        spike_slab.sample(jax.random.key(0), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), c=1.0, mask="soft")


def test_switched_off_dimension_with_an_overflowing_variance_adds_nothing_to_the_kl():
    """gamma underflows to 0 (logit -200) while sigma^2 = exp(100) overflows float32: the slab KL
    of that dimension is 0 (gamma times anything finite-bounded), with finite gradients, where
    gamma * exp(logvar) would be 0 * inf = NaN; the other dimension's KL is the float64 value."""
    mu = jnp.array([[0.5, 0.3]])
    logvar = jnp.array([[100.0, -0.2]])
    logit = jnp.array([[-200.0, 1.5]])

    def slab(mu, logvar, logit):
        return spike_slab.slab_kl_to_prior(mu, logvar, logit, 0.0, 0.0).sum()

    value, grads = jax.value_and_grad(slab, argnums=(0, 1, 2))(mu, logvar, logit)
    gamma, var = 1 / (1 + np.exp(-1.5)), np.exp(-0.2)
    expected = gamma * 0.5 * (var + 0.3**2 - 1 - (-0.2))
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    for g in grads:
        assert np.all(np.isfinite(g))
