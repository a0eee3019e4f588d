"""What evaluation reports of a model's fit: its exact bounds on -log p(x), and an IW bound.

* :func:`eval_terms`: every model's own exact bound on -log p(x) under a hard-spike sample,
  the same under the relaxed sample (their difference is the leak), and their parts;
* :func:`iw_neg_log_likelihood`: the importance-sampled bound over K hard-spike samples;
* :func:`prior_mixture`: a model's generative prior as a mixture ``sum_k w_k p_k(z)``, which
  both bounds (and sampling from the prior) read.

A learned prior with several components (classes, pseudo-inputs) is the mixture with uniform
weights, so its bound is the logsumexp over the components and needs no label
(docs/design.md, "Learned priors and their bounds"). Regularisers are reported beside the
bounds, never inside them. Every function here is pure and jit-able.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vscjax import spike_slab
from vscjax.models import VSC
from vscjax.objective import REGULARISERS, prior_terms


class PriorMixture(NamedTuple):
    """A spike-and-slab prior as a mixture ``p(z) = sum_k w_k p_k(z)`` of K components.

    ``mu``, ``logvar`` and ``spike_logit`` are [K, L], or [1, 1] where every component shares
    one value (the N(0, 1) slab, the fixed prior's logit(alpha)); ``log_weights`` is [K].
    """

    mu: jax.Array
    logvar: jax.Array
    spike_logit: jax.Array
    log_weights: jax.Array


def prior_mixture(model: VSC, alpha) -> PriorMixture:
    """The generative prior of a spike-and-slab model as a :class:`PriorMixture`.

    Fixed prior: one component alpha N(0, 1) + (1 - alpha) delta(0). Class-mask prior: one
    component per class, uniform weights. Pseudo-input prior: its K components with uniform
    weights (the x-dependent selector is a training device, not part of p(z)).
    """
    one = jnp.zeros((1, 1), jnp.float32)
    if model.prior is None:
        return PriorMixture(one, one, jnp.reshape(spike_slab.alpha_logit(alpha), (1, 1)), jnp.zeros(1))
    if model.prior_kind == "class_mask":
        logits = model.prior.logits()  # [C, L]
        num = logits.shape[0]
        return PriorMixture(one, one, logits, jnp.full(num, -jnp.log(num), jnp.float32))
    mu, logvar, logits = model.prior.components(model.encoder)  # [K, L] each
    num = logits.shape[0]
    return PriorMixture(mu, logvar, logits, jnp.full(num, -jnp.log(num), jnp.float32))


# ----------------------------------------------------------------------------- the exact bounds


def eval_terms(model: VSC, x, labels, key, *, c, alpha) -> dict:
    """Every model's exact bound on -log p(x) (hard spikes), the relaxed one, and their parts.

    Both bounds use the un-warmed posterior and the same noise (eta, eps), so the leak is a
    paired difference: only the mask differs, hard ``1[eta > 1 - gamma]`` against the relaxed
    one at the training c.

    Args:
      model: the VSC (or plain VAE) model.
      x: images [B, H, W, C].
      labels: [B] class labels (only the label-given bound and the regularisers read them).
      key: PRNG key of the sample's noise.
      c: the relaxed mask's sharpness.
      alpha: the fixed prior's spike probability.

    Returns:
      dict of [B] arrays:
        exact_neg_elbo: the model's own bound on -log p(x) with hard spikes (recon + slab_kl +
          spike_kl + component_kl; for the class-mask and pseudo-input priors the logsumexp
          over the mixture's components, no label used); relaxed_neg_elbo: the same with the
          relaxed sample; leak = exact - relaxed;
        recon, slab_kl, spike_kl, component_kl: the exact bound's parts (component_kl is the
          KL of the posterior over classes / pseudo-inputs to their uniform prior; 0 for one
          component);
        fixed_prior_exact_neg_elbo: the exact negative ELBO of the same q and decoder under the
          fixed prior alpha N(0, 1) + (1 - alpha) delta(0) (NaN for a plain VAE);
        class_conditional_neg_elbo: the class-mask prior's bound on -log p(x | y) with the
          sample's label y (NaN for other priors);
        the regularisers (``objective.REGULARISERS``; not in any bound);
        expected_active (sum_j gamma_j) and active_count (#{gamma_j > 0.5}).
    """
    mu, logvar, spike_logit = model.encode(x)
    nan = jnp.full(x.shape[0], jnp.nan, jnp.float32)
    if spike_logit is None:  # plain VAE: no spikes, nothing to relax
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
        recon = model.reconstruction_nll(z, x)
        kl = spike_slab.gaussian_kl(mu, logvar)
        zeros = jnp.zeros_like(kl)
        full = jnp.full(x.shape[0], model.latent_dim, jnp.float32)
        return dict(exact_neg_elbo=recon + kl, relaxed_neg_elbo=recon + kl, leak=zeros, recon=recon,
                    slab_kl=kl, spike_kl=zeros, component_kl=zeros, fixed_prior_exact_neg_elbo=nan,
                    class_conditional_neg_elbo=nan, **{name: zeros for name in REGULARISERS},
                    expected_active=full, active_count=full)
    eta, eps = spike_slab.noise(key, mu.shape, mu.dtype)
    draw = lambda mask: spike_slab.sample_from_noise(eta, eps, mu, logvar, spike_logit, c=c, mask=mask)  # noqa: E731
    recon = model.reconstruction_nll(draw("hard"), x)
    relaxed_recon = model.reconstruction_nll(draw("relaxed"), x)
    p = prior_terms(model, x, labels, mu, logvar, spike_logit, alpha)
    kl = p["bound_slab_kl"] + p["bound_spike_kl"] + p["component_kl"]
    fixed_kl = spike_slab.slab_kl_to_prior(mu, logvar, spike_logit, 0.0, 0.0) + p["fixed_prior_spike_kl"]
    class_conditional = (recon + p["slab_kl"] + p["spike_kl"]
                         if model.prior_kind == "class_mask" else nan)
    return dict(exact_neg_elbo=recon + kl, relaxed_neg_elbo=relaxed_recon + kl,
                leak=recon - relaxed_recon, recon=recon, slab_kl=p["bound_slab_kl"],
                spike_kl=p["bound_spike_kl"], component_kl=p["component_kl"],
                fixed_prior_exact_neg_elbo=recon + fixed_kl,
                class_conditional_neg_elbo=class_conditional, **{name: p[name] for name in REGULARISERS},
                expected_active=jnp.sum(jax.nn.sigmoid(spike_logit), axis=-1),
                active_count=jnp.sum(spike_logit > 0, axis=-1).astype(jnp.float32))


# ----------------------------------------------------------------------------- importance sampling


def _log_normal(value, mean, log_variance):
    return -0.5 * (math.log(2 * math.pi) + log_variance
                   + jnp.square(value - mean) * jnp.exp(-log_variance))


def log_prior_over_posterior(z, mu, logvar, spike_logit, prior: PriorMixture | None) -> jax.Array:
    """log p(z) - log q(z | x), summed over L, for a hard-spike sample z [B, L].

    Densities are with respect to the mixed measure (an atom at 0 plus Lebesgue) on each
    dimension: z_j = 0 (spike off) has mass 1 - gamma_j under q and 1 - pi_kj under prior
    component k; z_j != 0 has density gamma_j N(z_j; mu_j, sigma_j^2) under q and
    pi_kj N(z_j; m_kj, s_kj^2) under component k. The prior is the mixture
    ``p(z) = sum_k w_k p_k(z)`` (:func:`prior_mixture`; one component for the fixed prior).
    ``spike_logit`` None: the plain VAE, q Gaussian and p = N(0, I).

    Args:
      z: the sample [B, L]; mu, logvar, spike_logit: q's heads [B, L].
      prior: the prior mixture (None for the plain VAE).

    Returns:
      [B].
    """
    if spike_logit is None:
        return jnp.sum(_log_normal(z, 0.0, 0.0) - _log_normal(z, mu, logvar), axis=-1)
    on = (z != 0).astype(jnp.float32)  # [B, L]
    log_q = jnp.sum(on * (jax.nn.log_sigmoid(spike_logit) + _log_normal(z, mu, logvar))
                    + (1 - on) * jax.nn.log_sigmoid(-spike_logit), axis=-1)  # [B]
    num, length = prior.log_weights.shape[0], z.shape[-1]
    logits = jnp.broadcast_to(prior.spike_logit, (num, length))  # [K, L]
    highest = jax.lax.Precision.HIGHEST
    spike = (jnp.matmul(on, jax.nn.log_sigmoid(logits).T, precision=highest)
             + jnp.matmul(1 - on, jax.nn.log_sigmoid(-logits).T, precision=highest))  # [B, K]
    if prior.mu.shape[0] == 1:  # one slab prior shared by the components: [B, 1]
        slab = jnp.sum(on * _log_normal(z, prior.mu, prior.logvar), axis=-1, keepdims=True)
    else:  # [B, K, L] summed over L
        slab = jnp.sum(on[:, None] * _log_normal(z[:, None], prior.mu, prior.logvar), axis=-1)
    log_p = jax.nn.logsumexp(prior.log_weights + spike + slab, axis=-1)  # [B]
    return log_p - log_q


def iw_neg_log_likelihood(model: VSC, x, key, *, alpha, num_samples: int) -> jax.Array:
    """Importance-sampled upper bound on -log p(x) with hard spikes, [B].

    ``-log mean_k exp(log p(x | z_k) + log p(z_k) - log q(z_k | x))`` over ``num_samples``
    hard-spike posterior samples (one at a time, so memory does not grow with K), for every
    prior: the fixed one, the plain VAE's N(0, I), and the learned priors as the mixtures
    whose bound :func:`eval_terms` reports.

    Args:
      model: the model; x: images [B, H, W, C]; key: PRNG key of the samples.
      alpha: the fixed prior's spike probability.
      num_samples: K.
    """
    mu, logvar, spike_logit = model.encode(x)  # [B, L] each
    prior = None if spike_logit is None else prior_mixture(model, alpha)

    def log_weight(sample_key):  # [B]
        if spike_logit is None:
            z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(sample_key, mu.shape, mu.dtype)
        else:  # c is unused by the hard mask
            z = spike_slab.sample(sample_key, mu, logvar, spike_logit, c=1.0, mask="hard")
        return -model.reconstruction_nll(z, x) + log_prior_over_posterior(z, mu, logvar, spike_logit, prior)

    log_weights = jax.lax.map(log_weight, jax.random.split(key, num_samples))  # [K, B]
    return math.log(num_samples) - jax.nn.logsumexp(log_weights, axis=0)
