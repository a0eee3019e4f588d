"""The VSC objective, its schedules, and the exact (hard-spike) bound of every model.

    loss = mean_B[ recon NLL + beta * KL + regularisers ] + lambda_align * L_align

(docs/design.md, "The objective"). Every function here is pure and jit-able; the step number may
be traced, so schedules are computed with jnp.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vscjax import alignment, rng, spike_slab
from vscjax.models import VSC

SCHEDULE_KINDS = ("constant", "linear", "exponential")
# Regularisers of the learned priors (never part of a bound) -> the config.objective key of their
# weight in the loss.
REGULARISERS = {
    "sparsity": "sparsity_weight",  # learned priors: L * KL(Bern(mean prior spike) || Bern(alpha))
    "class_prior_penalty": "class_prior_penalty",  # class-mask prior: sum_j h[y, j]^2
    "partial_sharing": "partial_sharing",  # class-mask prior: partial_sharing()
    "class_exclusivity": "class_exclusivity",  # class-mask prior: class_exclusivity()
}


def eval_key(seed: int) -> jax.Array:
    """The key of every evaluation of a run (the "eval" stream of :mod:`vscjax.rng`): the same
    noise each time, so evaluations agree."""
    return rng.key(seed, "eval")


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
#
# Training and evaluation read the prior differently:
# * training (:func:`elbo_terms`): the fixed prior's exact KL; for the class-mask prior the KL
#   to the sample's own class (the label is known); for the pseudo-input prior the authors'
#   selector-weighted KL. Regularisers (the sparsity term of the learned priors, the penalty
#   on the class-mask prior's class offsets) are separate terms, weighted by the config.
# * evaluation (:func:`eval_terms`): every model's own exact bound on -log p(x) with hard
#   spikes. A learned prior with several components (classes, pseudo-inputs) is the mixture
#   sum_k w_k p_k(z) with uniform w, and its bound is the logsumexp over components
#   (spike_slab.mixture_kl_parts): no label is needed. Regularisers are never part of a bound.


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


def _labels_gather(per_class: jax.Array, labels: jax.Array) -> jax.Array:
    """Row ``labels[i]`` of a per-class array for each sample: [C, ...] -> [B, ...]."""
    return jnp.take(per_class, labels, axis=0, mode="clip")


def class_exclusivity(shared: jax.Array, offsets: jax.Array) -> jax.Array:
    """How much the classes raise the same dimensions above their shared level, a scalar.

    ``e[c, j] = max(sigmoid(shared_j + offsets_cj) - sigmoid(shared_j), 0)`` is the prior spike
    probability class c adds to dimension j; the exclusivity is ``sum_j sum_{c < c'} e_cj e_c'j``:
    0 when every dimension is raised by at most one class. Meant for nonnegative offsets, where
    a dimension every class uses must live in ``shared`` (with signed offsets the classes can
    lower a high shared logit instead, and the term says little).

    Args:
      shared: [L] shared logits; offsets: [C, L] class offsets.
    """
    base = jax.nn.sigmoid(shared)  # [L]
    excess = jnp.maximum(jax.nn.sigmoid(shared[None, :] + offsets) - base, 0.0)  # [C, L]
    total = jnp.sum(excess, axis=0)  # [L]
    return 0.5 * jnp.sum(jnp.square(total) - jnp.sum(jnp.square(excess), axis=0))


def partial_sharing(logits: jax.Array) -> jax.Array:
    """How much the class masks share dimensions without sharing them with every class, a scalar.

    With ``p[c, j] = sigmoid(logits[c, j])``: ``sum_j (1 - gbar_j) sum_{c < c'} p_cj p_c'j``, where
    ``gbar_j`` is the geometric mean of ``p[:, j]`` over the classes. 0 for a dimension that at
    most one class uses (class-specific) and for one that every class uses (global,
    ``gbar_j = 1``); largest for a dimension some classes share and others do not.

    Args:
      logits: the class-mask prior's spike logits, [C, L].
    """
    p = jax.nn.sigmoid(logits)  # [C, L]
    pairs = 0.5 * (jnp.square(jnp.sum(p, axis=0)) - jnp.sum(jnp.square(p), axis=0))  # [L]
    geometric_mean = jnp.exp(jnp.mean(jax.nn.log_sigmoid(logits), axis=0))  # [L]
    return jnp.sum((1.0 - geometric_mean) * pairs)


def _class_mask_regularisers(prior, labels, alpha) -> dict:
    """The class-mask prior's regularisers per sample, [B] each.

    sparsity: ``L * KL(Bern(rho_y) || Bern(alpha))`` with ``rho_y`` the mean prior spike
    probability of the sample's class; class_prior_penalty: ``sum_j h[y, j]^2``; partial_sharing
    (:func:`partial_sharing`) and class_exclusivity (:func:`class_exclusivity`), the same for
    every sample.
    """
    logits = prior.logits()  # [C, L]
    rho = jnp.mean(jax.nn.sigmoid(logits), axis=-1)  # [C]
    rho_logit = jnp.log(rho) - jnp.log1p(-rho)
    sparsity = logits.shape[-1] * spike_slab.spike_kl_to_prior(rho_logit[:, None], spike_slab.alpha_logit(alpha))
    offsets = prior.offsets()  # [C, L]
    penalty = jnp.sum(jnp.square(offsets), axis=-1)  # [C]
    per_sample = lambda value: jnp.full(labels.shape, value)  # noqa: E731
    return dict(sparsity=_labels_gather(sparsity, labels),
                class_prior_penalty=_labels_gather(penalty, labels),
                partial_sharing=per_sample(partial_sharing(logits)),
                class_exclusivity=per_sample(class_exclusivity(prior.shared[...], offsets)))


def _pseudo_input_kls(model: VSC, x, mu, logvar, spike_logit, alpha):
    """Per-component slab and spike KLs [B, K], selector weights [B, K], sparsity term [B]."""
    p_mu, p_logvar, p_logit = model.prior.components(model.encoder)  # [K, L] each
    w = model.prior.weights(x)  # [B, K], rows sum to 1
    post = lambda t: t[:, None, :]  # noqa: E731  [B, 1, L] against the [K, L] components
    slab = spike_slab.slab_kl_to_prior(post(mu), post(logvar), post(spike_logit), p_mu, p_logvar)
    spike = spike_slab.spike_kl_to_prior(post(spike_logit), p_logit)  # [B, K] each
    # Sparsity: L * KL(Bern(rho_i) || Bern(alpha)), rho_i = mean_j sum_k w_ik gamma_kj.
    rho = jnp.mean(w @ jax.nn.sigmoid(p_logit), axis=-1)  # [B]
    rho_logit = jnp.log(rho) - jnp.log1p(-rho)
    sparsity = mu.shape[-1] * spike_slab.spike_kl_to_prior(rho_logit[:, None], spike_slab.alpha_logit(alpha))
    return slab, spike, w, sparsity


def _prior_terms(model: VSC, x, labels, mu, logvar, spike_logit, alpha) -> dict:
    """KL and regulariser terms of a spike-and-slab model, [B] each.

    Returns slab_kl, spike_kl (training: own class / selector-weighted), the bound's parts
    bound_slab_kl, bound_spike_kl, component_kl, the fixed-prior spike KL, and the regularisers
    (one entry per name in ``REGULARISERS``; zeros where the prior has none).
    """
    zeros = jnp.zeros(mu.shape[0], jnp.float32)
    slab_std = spike_slab.slab_kl_to_prior(mu, logvar, spike_logit, 0.0, 0.0)  # to N(0, 1)
    fixed_spike = spike_slab.spike_kl_to_prior(spike_logit, spike_slab.alpha_logit(alpha))
    out = dict(fixed_prior_spike_kl=fixed_spike, **{name: zeros for name in REGULARISERS})
    prior = model.prior
    if prior is None:  # the fixed prior: training and bound agree
        out.update(slab_kl=slab_std, spike_kl=fixed_spike, bound_slab_kl=slab_std,
                   bound_spike_kl=fixed_spike, component_kl=zeros)
        return out
    if model.prior_kind == "class_mask":
        logits = prior.logits()  # [C, L]
        own = spike_slab.spike_kl_to_prior(spike_logit, _labels_gather(logits, labels))  # [B]
        per_class = spike_slab.spike_kl_to_components(spike_logit, logits)  # [B, C]
        log_w = jnp.full(prior.num_classes, -jnp.log(prior.num_classes), jnp.float32)
        b_slab, b_spike, comp = spike_slab.mixture_kl_parts(slab_std[:, None], per_class, log_w)
        out.update(slab_kl=slab_std, spike_kl=own, bound_slab_kl=b_slab, bound_spike_kl=b_spike,
                   component_kl=comp, **_class_mask_regularisers(prior, labels, alpha))
        return out
    slab, spike, w, sparsity = _pseudo_input_kls(model, x, mu, logvar, spike_logit, alpha)
    num = slab.shape[-1]
    b_slab, b_spike, comp = spike_slab.mixture_kl_parts(
        slab, spike, jnp.full(num, -jnp.log(num), jnp.float32))
    out.update(slab_kl=jnp.sum(w * slab, -1), spike_kl=jnp.sum(w * spike, -1), bound_slab_kl=b_slab,
               bound_spike_kl=b_spike, component_kl=comp, sparsity=sparsity)
    return out


def elbo_terms(model: VSC, x, labels, key, *, c, alpha, mask: str, warmup=1.0) -> dict:
    """Per-sample terms of the training objective under one posterior sample.

    Args:
      model: the VSC (or plain VAE) model.
      x: images [B, H, W, C].
      labels: [B] class labels (the class-mask prior's training KL and regularisers read them;
        the encoder never does).
      key: PRNG key of the sample.
      c: spike sharpness of the relaxed mask.
      alpha: prior spike probability.
      mask: "relaxed", "straight_through" (training) or "hard".
      warmup: lambda in [0, 1]; the sample uses lambda * mu and lambda * logvar, the KL the
        un-warmed parameters.

    Returns:
      dict of [B] arrays: recon, slab_kl, spike_kl, the regularisers (``REGULARISERS``), neg_elbo
      (recon + slab_kl + spike_kl: for the class-mask prior the bound on -log p(x | y), for the
      pseudo-input prior the authors' selector-weighted objective); and the heads mu, logvar,
      spike_logit ([B, L]; spike_logit None for a VAE).
    """
    mu, logvar, spike_logit = model.encode(x)
    if spike_logit is None:  # plain VAE with a standard normal prior
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        z = mu + jnp.exp(0.5 * logvar) * eps
        slab_kl = spike_slab.gaussian_kl(mu, logvar)
        zeros = jnp.zeros_like(slab_kl)
        p = dict(slab_kl=slab_kl, spike_kl=zeros, **{name: zeros for name in REGULARISERS})
    else:
        z = spike_slab.sample(key, warmup * mu, warmup * logvar, spike_logit, c=c, mask=mask)
        p = _prior_terms(model, x, labels, mu, logvar, spike_logit, alpha)
    recon = model.reconstruction_nll(z, x)
    return dict(recon=recon, slab_kl=p["slab_kl"], spike_kl=p["spike_kl"],
                **{name: p[name] for name in REGULARISERS},
                neg_elbo=recon + p["slab_kl"] + p["spike_kl"], mu=mu, logvar=logvar, spike_logit=spike_logit)


def loss_and_metrics(model: VSC, batch: dict, key, step, objective, num_classes: int,
                     *, class_major: bool = False):
    """The training loss at ``step`` and its metrics (scalars averaged over the global batch).

        loss = mean_B[recon + beta * (slab KL + spike KL)
                      + sum over REGULARISERS of their config weight * their value]
               + align_weight * alignment

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
    t = elbo_terms(model, batch["image"], batch["label"], key, c=c, alpha=objective.alpha,
                   mask=objective.mask, warmup=warmup)
    kl = t["slab_kl"] + t["spike_kl"]
    regulariser = sum(objective[weight] * t[name] for name, weight in REGULARISERS.items())
    loss = jnp.mean(t["recon"] + beta * kl + regulariser)
    metrics = dict(recon=jnp.mean(t["recon"]), kl=jnp.mean(kl),
                   **{name: jnp.mean(t[name]) for name in REGULARISERS},
                   c=c, beta=beta, warmup=warmup, align_weight=align_weight)
    if t["spike_logit"] is not None:
        gamma = jax.nn.sigmoid(t["spike_logit"])
        metrics["mean_gamma"] = jnp.mean(gamma)
        metrics["expected_active"] = jnp.mean(jnp.sum(gamma, axis=-1))
        if objective.align_mode != "off":
            align = alignment.class_alignment_loss(t["spike_logit"], batch["label"], num_classes,
                                                   mode=objective.align_mode,
                                                   reduce_dims=objective.align_reduce_dims,
                                                   class_major=class_major)
            loss = loss + align_weight * align
            metrics["align"] = align
    metrics["loss"] = loss
    return loss, metrics


def leak_applies(objective_config) -> bool:
    """Whether the leak (exact minus relaxed -ELBO) means anything for a model trained under
    ``objective_config``: only on the relaxed sample can information pass a closed spike."""
    return objective_config.mask == "relaxed"


def eval_terms(model: VSC, x, labels, key, *, c, alpha) -> dict:
    """Every model's exact bound on -log p(x) (hard spikes), the relaxed one, and their parts.

    Both bounds use the un-warmed posterior and the same noise (eta, eps), so the leak is a
    paired difference: only the mask differs, hard ``1[eta > 1 - gamma]`` against the relaxed
    one at the training c.

    Returns:
      dict of [B] arrays:
        exact: the model's own bound on -log p(x) with hard spikes (recon + slab_kl +
          spike_kl + component_kl; for the class-mask and pseudo-input priors the logsumexp
          over the mixture's components, no label used); relaxed: the same with the relaxed
          sample; leak = exact - relaxed;
        recon, slab_kl, spike_kl, component_kl: the exact bound's parts (component_kl is the
          KL of the posterior over classes / pseudo-inputs to their uniform prior; 0 for one
          component);
        fixed_prior_exact: the exact negative ELBO of the same q and decoder under the fixed
          prior alpha N(0, 1) + (1 - alpha) delta(0) (NaN for a plain VAE);
        class_conditional_exact: the class-mask prior's bound on -log p(x | y) with the
          sample's label y (NaN for other priors);
        the regularisers (``REGULARISERS``; not in any bound);
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
        return dict(exact=recon + kl, relaxed=recon + kl, leak=zeros, recon=recon, slab_kl=kl,
                    spike_kl=zeros, component_kl=zeros, fixed_prior_exact=nan,
                    class_conditional_exact=nan, **{name: zeros for name in REGULARISERS},
                    expected_active=full, active_count=full)
    eta, eps = spike_slab.noise(key, mu.shape, mu.dtype)
    draw = lambda mask: spike_slab.sample_from_noise(eta, eps, mu, logvar, spike_logit, c=c, mask=mask)  # noqa: E731
    recon = model.reconstruction_nll(draw("hard"), x)
    relaxed_recon = model.reconstruction_nll(draw("relaxed"), x)
    p = _prior_terms(model, x, labels, mu, logvar, spike_logit, alpha)
    kl = p["bound_slab_kl"] + p["bound_spike_kl"] + p["component_kl"]
    fixed_kl = spike_slab.slab_kl_to_prior(mu, logvar, spike_logit, 0.0, 0.0) + p["fixed_prior_spike_kl"]
    class_conditional = (recon + p["slab_kl"] + p["spike_kl"]
                         if model.prior_kind == "class_mask" else nan)
    return dict(exact=recon + kl, relaxed=relaxed_recon + kl, leak=recon - relaxed_recon,
                recon=recon, slab_kl=p["bound_slab_kl"], spike_kl=p["bound_spike_kl"],
                component_kl=p["component_kl"], fixed_prior_exact=recon + fixed_kl,
                class_conditional_exact=class_conditional, **{name: p[name] for name in REGULARISERS},
                expected_active=jnp.sum(jax.nn.sigmoid(spike_logit), axis=-1),
                active_count=jnp.sum(spike_logit > 0, axis=-1).astype(jnp.float32))
