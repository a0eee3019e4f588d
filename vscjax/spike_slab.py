"""Spike-and-slab posterior: reparameterised samples and exact KL divergences.

Pure functions of arrays (no state, no other vscjax module); every one is jit-able and
differentiable. Shapes: ``mu``, ``logvar`` and ``spike_logit`` are ``[..., L]`` (usually
``[B, L]``); KLs sum over the last axis and return ``[...]``.

The posterior of one latent dimension is
``q(z) = gamma N(z; mu, sigma^2) + (1 - gamma) delta(z)`` with ``gamma = sigmoid(spike_logit)``
and ``sigma^2 = exp(logvar)``. Every log of ``gamma`` or ``1 - gamma`` is computed from the
logit (``log_sigmoid(s)``, ``log_sigmoid(-s)``), never by clamping a probability.

Masks (how the spike enters a sample; docs/design.md, "Samples, masks and the leak"):

* ``"relaxed"``: ``sigmoid(c (eta + gamma - 1))`` with ``eta ~ U(0, 1)`` (VSC supplement B).
  Differentiable, but a dimension with gamma ~ 0 still passes about ``log(2) / c`` of its
  slab, which the KL never charges for.
* ``"hard"``: ``1[eta > 1 - gamma]``, the Bernoulli spike for which the KL is exact. No gradient
  reaches the spike logits through it; used for evaluation.
* ``"straight_through"``: the hard mask in the forward pass, the relaxed mask's gradient in
  the backward pass.

The hard draw is *coupled* to the relaxed one: as ``c`` grows, ``sigmoid(c (eta + gamma - 1))``
tends to ``1[eta > 1 - gamma]`` on the same ``eta``, so the straight-through gradient is read
where the relaxed mask switches the same dimension on. (``1[eta < gamma]`` is an equally valid
Bernoulli draw, but it is on at the other end of ``eta``: for gamma < 1/2 it and the relaxed
mask are never on together, and the gradient would belong to a different sample.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKS = ("relaxed", "hard", "straight_through")


def spike_mask(eta: jax.Array, spike_logit: jax.Array, *, c, mask: str = "relaxed") -> jax.Array:
    """The spike factor of a sample from uniform noise ``eta`` ([..., L] in [0, 1)).

    ``hard = 1[eta > 1 - gamma]`` (probability gamma) and ``relaxed = sigmoid(c (eta - (1 -
    gamma)))``, both from the same ``eta``; ``1 - gamma`` is ``sigmoid(-spike_logit)``, exact
    where gamma rounds to 1.
    """
    off = jax.nn.sigmoid(-spike_logit)  # 1 - gamma
    if mask == "hard":
        return (eta > off).astype(off.dtype)
    relaxed = jax.nn.sigmoid(c * (eta - off))
    if mask == "relaxed":
        return relaxed
    if mask == "straight_through":
        hard = (eta > off).astype(off.dtype)
        return relaxed + jax.lax.stop_gradient(hard - relaxed)
    raise ValueError(f"unknown spike mask {mask!r}; expected one of {MASKS}")


def sample_from_noise(
    eta: jax.Array,
    eps: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    spike_logit: jax.Array,
    *,
    c,
    mask: str = "relaxed",
) -> jax.Array:
    """Spike-and-slab sample ``mask(eta) * (mu + sigma * eps)`` from given noise.

    ``eta ~ U(0, 1)`` and ``eps ~ N(0, 1)`` have the shape of ``mu`` ([..., L]). Exposed so
    that other implementations can be compared on identical noise.
    """
    slab = mu + jnp.exp(0.5 * logvar) * eps
    return spike_mask(eta, spike_logit, c=c, mask=mask) * slab


def sample(
    key: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    spike_logit: jax.Array,
    *,
    c,
    mask: str = "relaxed",
) -> jax.Array:
    """Reparameterised sample ``z = sigmoid(c (eta + gamma - 1)) (mu + sigma eps)``.

    Args:
      key: a PRNG key.
      mu, logvar, spike_logit: posterior parameters, [..., L].
      c: sharpness of the relaxed spike (> 0), a float or a traced scalar.
      mask: "relaxed" (default, the formula above), "hard" or "straight_through".

    Returns:
      z: [..., L].
    """
    eta, eps = noise(key, mu.shape, mu.dtype)
    return sample_from_noise(eta, eps, mu, logvar, spike_logit, c=c, mask=mask)


def noise(key: jax.Array, shape, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """The noise of one sample: ``eta ~ U(0, 1)`` and ``eps ~ N(0, 1)``, each of ``shape``."""
    key_eta, key_eps = jax.random.split(key)
    return jax.random.uniform(key_eta, shape, dtype), jax.random.normal(key_eps, shape, dtype)


def slab_kl_to_prior(mu, logvar, spike_logit, prior_mu, prior_logvar) -> jax.Array:
    """``sum_j gamma_j KL(N(mu_j, sigma_j^2) || N(prior_mu_j, prior_sigma_j^2))``, [...].

    ``gamma_j sigma_j^2 / prior_sigma_j^2`` is taken as one exponential of
    ``log_sigmoid(s) + logvar - prior_logvar``: a dimension switched off (gamma underflowing
    to 0) whose slab variance has grown past float32's range then adds 0, where
    ``gamma * exp(logvar)`` would be 0 * inf = NaN in value and gradient.
    """
    gamma = jax.nn.sigmoid(spike_logit)
    variance = jnp.exp(jax.nn.log_sigmoid(spike_logit) + logvar - prior_logvar)  # gamma sigma^2 / sigma_p^2
    rest = prior_logvar - logvar + jnp.square(mu - prior_mu) * jnp.exp(-prior_logvar) - 1.0
    return 0.5 * jnp.sum(variance + gamma * rest, axis=-1)


def spike_kl_to_prior(spike_logit, prior_spike_logit) -> jax.Array:
    """``sum_j KL(Bernoulli(gamma_j) || Bernoulli(prior_gamma_j))`` from logits, [...]."""
    gamma = jax.nn.sigmoid(spike_logit)
    one_minus_gamma = jax.nn.sigmoid(-spike_logit)
    bern_kl = gamma * (
        jax.nn.log_sigmoid(spike_logit) - jax.nn.log_sigmoid(prior_spike_logit)
    ) + one_minus_gamma * (
        jax.nn.log_sigmoid(-spike_logit) - jax.nn.log_sigmoid(-prior_spike_logit)
    )
    return jnp.sum(bern_kl, axis=-1)


def kl_to_prior(mu, logvar, spike_logit, prior_mu, prior_logvar, prior_spike_logit) -> jax.Array:
    """Exact per-sample KL(q || p) between two spike-and-slab distributions.

    The delta and Gaussian parts are mutually singular, so the KL splits exactly into the
    gamma-weighted Gaussian KL (the slab part) plus the Bernoulli KL of the spikes::

        KL = sum_j gamma_j KL(N_q || N_p) + KL(Bern(gamma_j) || Bern(gamma_pj))

    All arguments broadcast against each other; e.g. posterior parameters [B, 1, L] against
    prior components [K, L] give [B, K] (the pseudo-input prior).

    Returns:
      KL summed over the last axis, [...].
    """
    return slab_kl_to_prior(mu, logvar, spike_logit, prior_mu, prior_logvar) + spike_kl_to_prior(
        spike_logit, prior_spike_logit
    )


def spike_kl_to_components(spike_logit: jax.Array, prior_logits: jax.Array) -> jax.Array:
    """``sum_j KL(Bern(gamma_j) || Bern(sigmoid(prior_logits[k, j])))`` for every component k.

    Written as ``-H(gamma) - gamma . log p_k - (1 - gamma) . log(1 - p_k)``: two [..., L] x
    [L, K] matmuls (at full float32 precision) instead of a [..., K, L] array, so it stays
    cheap at large L.

    Args:
      spike_logit: posterior spike logits, [..., L].
      prior_logits: prior spike logits of K components, [K, L].

    Returns:
      [..., K].
    """
    gamma, one_minus_gamma = jax.nn.sigmoid(spike_logit), jax.nn.sigmoid(-spike_logit)
    neg_entropy = jnp.sum(gamma * jax.nn.log_sigmoid(spike_logit)
                          + one_minus_gamma * jax.nn.log_sigmoid(-spike_logit), axis=-1)  # [...]
    highest = jax.lax.Precision.HIGHEST
    cross = (jnp.matmul(gamma, jax.nn.log_sigmoid(prior_logits).T, precision=highest)
             + jnp.matmul(one_minus_gamma, jax.nn.log_sigmoid(-prior_logits).T, precision=highest))
    return neg_entropy[..., None] - cross  # [..., K]


def mixture_kl_parts(slab_kl: jax.Array, spike_kl: jax.Array, log_weights: jax.Array):
    """The KL part of the ELBO of a mixture prior ``p(z) = sum_k w_k p_k(z)``, in three parts.

    With the per-component ELBOs ``ELBO_k = E_q[log p(x | z)] - KL(q || p_k)``,
    ``log p(x) >= logsumexp_k(log w_k + ELBO_k)``, so ``-log p(x) <= recon + K`` with
    ``K = -logsumexp_k(log w_k - KL_k)``. Writing ``r = softmax_k(log w_k - KL_k)`` (the
    posterior over components), ``K = sum_k r_k slab_k + sum_k r_k spike_k + KL(r || w)``.

    Args:
      slab_kl, spike_kl: per-component KLs, [B, K] (they broadcast).
      log_weights: log w_k, [K] (normalised).

    Returns:
      (slab, spike, component), each [B]; their sum is ``K``.
    """
    total = slab_kl + spike_kl  # [B, K]
    log_r = jax.nn.log_softmax(log_weights - total, axis=-1)  # [B, K], finite
    r = jnp.exp(log_r)
    slab = jnp.sum(r * jnp.broadcast_to(slab_kl, total.shape), axis=-1)
    spike = jnp.sum(r * jnp.broadcast_to(spike_kl, total.shape), axis=-1)
    component = jnp.sum(r * (log_r - log_weights), axis=-1)
    return slab, spike, component


def alpha_logit(alpha) -> jax.Array:
    """Logit of the prior spike probability alpha in (0, 1)."""
    alpha = jnp.asarray(alpha, jnp.float32)
    return jnp.log(alpha) - jnp.log1p(-alpha)


def kl(mu, logvar, spike_logit, *, alpha) -> jax.Array:
    """Exact per-sample KL to the fixed prior ``alpha N(0, 1) + (1 - alpha) delta(0)``.

    Args:
      mu, logvar, spike_logit: posterior parameters, [B, L].
      alpha: prior spike probability in (0, 1).

    Returns:
      [B], summed over the L dimensions.
    """
    return kl_to_prior(mu, logvar, spike_logit, 0.0, 0.0, alpha_logit(alpha))


def gaussian_kl(mu, logvar) -> jax.Array:
    """Per-sample KL(N(mu, sigma^2) || N(0, 1)) summed over the last axis (the plain VAE)."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar, axis=-1)
