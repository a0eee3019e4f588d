"""The VSC objective, its schedules, and the exact (hard-spike) evaluation of the ELBO.

    loss = mean_B[ recon NLL + beta * KL (+ sparsity term) ] + lambda_align * L_align

(DESIGN.md, "Objective"). Every function here is pure and jit-able; the step number may be
traced, so schedules are computed with jnp.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vscjax import alignment, spike_slab
from vscjax.models import VSC

SCHEDULE_KINDS = ("constant", "linear", "exponential")
EVAL_KEY_SALT = 0x5EED


def eval_key(seed: int) -> jax.Array:
    """The key of every evaluation of a run: the same noise each time, so evaluations agree."""
    return jax.random.fold_in(jax.random.key(seed), EVAL_KEY_SALT)


# ----------------------------------------------------------------------------- schedules


def schedule_value(spec, step) -> jax.Array:
    """Value of a schedule at ``step`` (a Python int or a traced integer).

    ``spec`` has fields ``kind`` ("constant", "linear" or "exponential"), ``value`` (the value
    at and after ``end_step``, and the constant), ``start`` (the value up to ``begin_step``).
    Linear interpolates; exponential interpolates log-linearly (start and value > 0).
    """
    value = jnp.float32(spec.value)
    if spec.kind == "constant":
        return value
    if spec.kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {spec.kind!r}; expected one of {SCHEDULE_KINDS}")
    span = max(spec.end_step - spec.begin_step, 1)
    t = jnp.clip((jnp.asarray(step, jnp.float32) - spec.begin_step) / span, 0.0, 1.0)
    start = jnp.float32(spec.start)
    if spec.kind == "linear":
        return start + t * (value - start)
    return jnp.exp(jnp.log(start) + t * (jnp.log(value) - jnp.log(start)))


# ----------------------------------------------------------------------------- ELBO terms


def _kl_terms(model: VSC, x, mu, logvar, spike_logit, alpha):
    """Per-sample (slab KL, spike KL, sparsity term), each [B]."""
    if model.prior is None:
        prior_logit = spike_slab.alpha_logit(alpha)
        return (
            spike_slab.slab_kl_to_prior(mu, logvar, spike_logit, 0.0, 0.0),
            spike_slab.spike_kl_to_prior(spike_logit, prior_logit),
            jnp.zeros(mu.shape[0], jnp.float32),
        )
    p_mu, p_logvar, p_logit = model.prior.components(model.encoder)  # [K, L] each
    w = model.prior.weights(x)  # [B, K], rows sum to 1
    post = lambda t: t[:, None, :]  # noqa: E731  [B, 1, L] against the [K, L] components
    slab = spike_slab.slab_kl_to_prior(post(mu), post(logvar), post(spike_logit), p_mu, p_logvar)
    spike = spike_slab.spike_kl_to_prior(post(spike_logit), p_logit)  # [B, K] each
    # Sparsity: L * KL(Bern(rho_i) || Bern(alpha)), rho_i = mean_j sum_k w_ik gamma_kj.
    rho = jnp.mean(w @ jax.nn.sigmoid(p_logit), axis=-1)  # [B]
    rho_logit = jnp.log(rho) - jnp.log1p(-rho)
    sparsity = mu.shape[-1] * spike_slab.spike_kl_to_prior(
        rho_logit[:, None], spike_slab.alpha_logit(alpha)
    )
    return jnp.sum(w * slab, -1), jnp.sum(w * spike, -1), sparsity


def elbo_terms(model: VSC, x, key, *, c, alpha, mask: str, warmup=1.0) -> dict:
    """Per-sample terms of the negative ELBO under one posterior sample.

    Args:
      model: the VSC (or plain VAE) model.
      x: images [B, H, W, C].
      key: PRNG key of the sample.
      c: spike sharpness of the relaxed mask.
      alpha: prior spike probability.
      mask: "relaxed", "straight_through" (training) or "hard" (the exact ELBO).
      warmup: lambda in [0, 1]; the sample uses lambda * mu and lambda * logvar, the KL the
        un-warmed parameters.

    Returns:
      dict of [B] arrays: recon, slab_kl, spike_kl, sparsity, neg_elbo; and the heads
      mu, logvar, spike_logit ([B, L]; spike_logit None for a VAE).
    """
    mu, logvar, spike_logit = model.encode(x)
    if spike_logit is None:  # plain VAE with a standard normal prior
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        z = mu + jnp.exp(0.5 * logvar) * eps
        slab_kl = spike_slab.gaussian_kl(mu, logvar)
        spike_kl = sparsity = jnp.zeros_like(slab_kl)
    else:
        z = spike_slab.sample(key, warmup * mu, warmup * logvar, spike_logit, c=c, mask=mask)
        slab_kl, spike_kl, sparsity = _kl_terms(model, x, mu, logvar, spike_logit, alpha)
    recon = model.reconstruction_nll(z, x)
    return dict(recon=recon, slab_kl=slab_kl, spike_kl=spike_kl, sparsity=sparsity,
                neg_elbo=recon + slab_kl + spike_kl + sparsity,
                mu=mu, logvar=logvar, spike_logit=spike_logit)


def loss_and_metrics(model: VSC, batch: dict, key, step, objective, num_classes: int,
                     *, class_major: bool = False):
    """The training loss at ``step`` and its metrics (scalars averaged over the global batch).

    Args:
      model: the model.
      batch: {"image": [B, H, W, C], "label": [B]}.
      key: PRNG key for this step.
      step: the training step (schedules read it).
      objective: the ``config.objective`` block.
      num_classes: C, for the alignment loss.
      class_major: the batch is class-balanced in class-major order (pairwise alignment then
        compares only within class blocks).
    """
    c = schedule_value(objective.c, step)
    beta = schedule_value(objective.beta, step)
    warmup = schedule_value(objective.warmup, step)
    align_weight = schedule_value(objective.align_weight, step)
    t = elbo_terms(model, batch["image"], key, c=c, alpha=objective.alpha,
                   mask=objective.mask, warmup=warmup)
    kl = t["slab_kl"] + t["spike_kl"]
    loss = jnp.mean(t["recon"] + beta * kl + t["sparsity"])
    metrics = dict(recon=jnp.mean(t["recon"]), kl=jnp.mean(kl), sparsity=jnp.mean(t["sparsity"]),
                   c=c, beta=beta, warmup=warmup, align_weight=align_weight)
    if t["spike_logit"] is not None:
        gamma = jax.nn.sigmoid(t["spike_logit"])
        metrics["mean_gamma"] = jnp.mean(gamma)
        metrics["expected_active"] = jnp.mean(jnp.sum(gamma, axis=-1))
        if objective.align_mode != "off":
            align = alignment.class_alignment_loss(t["spike_logit"], batch["label"], num_classes,
                                                   mode=objective.align_mode, class_major=class_major)
            loss = loss + align_weight * align
            metrics["align"] = align
    metrics["loss"] = loss
    return loss, metrics


def eval_terms(model: VSC, x, key, *, c, alpha) -> dict:
    """Exact (hard-spike) and relaxed negative ELBO per sample, and their difference, the leak.

    Both use the un-warmed posterior and the same noise (eta, eps), so the leak is a paired
    difference: only the mask differs, hard ``1[eta > 1 - gamma]`` against the relaxed one at the
    training c.

    Returns:
      dict of [B] arrays: exact, relaxed, leak, recon, slab_kl, spike_kl, sparsity (the exact
      ELBO's parts), expected_active (sum_j gamma_j) and active_count (#{gamma_j > 0.5}).
    """
    exact = elbo_terms(model, x, key, c=c, alpha=alpha, mask="hard")
    relaxed = elbo_terms(model, x, key, c=c, alpha=alpha, mask="relaxed")
    out = {k: exact[k] for k in ("recon", "slab_kl", "spike_kl", "sparsity")}
    out.update(exact=exact["neg_elbo"], relaxed=relaxed["neg_elbo"],
               leak=exact["neg_elbo"] - relaxed["neg_elbo"])
    if exact["spike_logit"] is None:
        out["expected_active"] = out["active_count"] = jnp.full(x.shape[0], model.latent_dim, jnp.float32)
    else:
        gamma = jax.nn.sigmoid(exact["spike_logit"])
        out["expected_active"] = jnp.sum(gamma, axis=-1)
        out["active_count"] = jnp.sum(exact["spike_logit"] > 0, axis=-1).astype(jnp.float32)
    return out
