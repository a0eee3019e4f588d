"""The VSC training objective and its schedules.

    loss = mean_B[ recon NLL + beta * KL + regularisers ] + lambda_align * L_align

(docs/design.md, "The objective"). The KL terms of every prior (:func:`prior_terms`) serve the
training loss and the evaluation's bounds alike (``vscjax.bounds``). Every function here is pure
and jit-able; the step number may be traced, so schedules are computed with jnp.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vscjax import alignment, spike_slab
from vscjax.models import VSC

SCHEDULE_KINDS = ("constant", "linear", "exponential")
SCHEDULES = ("c", "beta", "warmup", "align_weight")  # the config.objective keys holding schedules
# Regularisers of the learned priors (never part of a bound) -> the config.objective key of their
# weight in the loss.
REGULARISERS = {
    "sparsity": "sparsity_weight",  # learned priors: L * KL(Bern(mean prior spike) || Bern(alpha))
    "class_prior_penalty": "class_prior_penalty",  # class-mask prior: sum_j h[y, j]^2
    "partial_sharing": "partial_sharing",  # class-mask prior: partial_sharing()
    "class_exclusivity": "class_exclusivity",  # class-mask prior: class_exclusivity()
}


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


def unfinished_schedules(objective_config, num_steps: int) -> list[str]:
    """One line for each schedule of ``objective_config`` that a run of ``num_steps`` steps
    stops before its ``end_step``, saying the value it stops at.

    Args:
      objective_config: the ``config.objective`` block.
      num_steps: the run's last step (``train.num_steps``).
    """
    lines = []
    for name in SCHEDULES:
        spec = objective_config[name]
        if spec.kind != "constant" and spec.end_step > num_steps:
            lines.append(
                f"objective.{name} ends at step {spec.end_step}, after train.num_steps={num_steps}: "
                f"it stops at {float(schedule_value(spec, num_steps)):.4g} instead of {spec.value:g} "
                f"(--config.objective.{name}.end_step={num_steps} ends it with this run)")
    return lines


# ----------------------------------------------------------------------------- ELBO terms
#
# Training and evaluation read the prior differently:
# * training (:func:`elbo_terms`): the fixed prior's exact KL; for the class-mask prior the KL
#   to the sample's own class (the label is known); for the pseudo-input prior the authors'
#   selector-weighted KL. Regularisers (the sparsity term of the learned priors, the penalty
#   on the class-mask prior's class offsets) are separate terms, weighted by the config.
# * evaluation (``vscjax.bounds.eval_terms``): every model's own exact bound on -log p(x) with
#   hard spikes. A learned prior with several components (classes, pseudo-inputs) is the mixture
#   sum_k w_k p_k(z) with uniform w, and its bound is the logsumexp over components
#   (spike_slab.mixture_kl_parts): no label is needed. Regularisers are never part of a bound.


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


def sparsity(rho, latent_dim: int, alpha) -> jax.Array:
    """The learned priors' sparsity term ``L * KL(Bern(rho) || Bern(alpha))``, elementwise in rho.

    Args:
      rho: a mean prior spike probability per sample (or per class), [...].
      latent_dim: L.
      alpha: the prior spike probability it is pulled towards.
    """
    rho_logit = jnp.log(rho) - jnp.log1p(-rho)
    return latent_dim * spike_slab.spike_kl_to_prior(rho_logit[..., None], spike_slab.alpha_logit(alpha))


def _class_mask_regularisers(prior, labels, alpha) -> dict:
    """The class-mask prior's regularisers per sample, [B] each.

    sparsity: ``L * KL(Bern(rho_y) || Bern(alpha))`` with ``rho_y`` the mean prior spike
    probability of the sample's class; class_prior_penalty: ``sum_j h[y, j]^2``; partial_sharing
    (:func:`partial_sharing`) and class_exclusivity (:func:`class_exclusivity`), the same for
    every sample.
    """
    logits = prior.logits()  # [C, L]
    rho = jnp.mean(jax.nn.sigmoid(logits), axis=-1)  # [C]
    offsets = prior.offsets()  # [C, L]
    penalty = jnp.sum(jnp.square(offsets), axis=-1)  # [C]
    per_sample = lambda value: jnp.full(labels.shape, value)  # noqa: E731
    return dict(sparsity=_labels_gather(sparsity(rho, logits.shape[-1], alpha), labels),
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
    rho = jnp.mean(w @ jax.nn.sigmoid(p_logit), axis=-1)  # [B]: mean_j sum_k w_ik gamma_kj
    return slab, spike, w, sparsity(rho, mu.shape[-1], alpha)


def prior_terms(model: VSC, x, labels, mu, logvar, spike_logit, alpha) -> dict:
    """KL and regulariser terms of a spike-and-slab model, [B] each: what the training loss and
    the evaluation's bounds (``vscjax.bounds``) both read.

    Args:
      model: the model (its prior); x: images [B, H, W, C] (the pseudo-input selector reads
        them); labels: [B] class labels (the class-mask prior's own-class KL reads them).
      mu, logvar, spike_logit: the posterior heads [B, L].
      alpha: the fixed prior's spike probability.

    Returns:
      dict: slab_kl, spike_kl (training: own class / selector-weighted), the bound's parts
      bound_slab_kl, bound_spike_kl, component_kl, fixed_prior_spike_kl, and the regularisers
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
    slab, spike, w, sparsity_term = _pseudo_input_kls(model, x, mu, logvar, spike_logit, alpha)
    num = slab.shape[-1]
    b_slab, b_spike, comp = spike_slab.mixture_kl_parts(
        slab, spike, jnp.full(num, -jnp.log(num), jnp.float32))
    out.update(slab_kl=jnp.sum(w * slab, -1), spike_kl=jnp.sum(w * spike, -1), bound_slab_kl=b_slab,
               bound_spike_kl=b_spike, component_kl=comp, sparsity=sparsity_term)
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
        p = prior_terms(model, x, labels, mu, logvar, spike_logit, alpha)
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
