"""A float64 NumPy reference of the MLP model and of the whole training loss.

Written from the formulas of docs/design.md, sharing no code with vscjax: the tests compare
vscjax's float32 loss, its metrics and the gradient its train step applies with these.
Parameters are a flat dict of float64 arrays named like ``encoder/layers/0/kernel``
(:func:`params_of`); noise (eta, eps) is an input.
"""

import math

import jax
import numpy as np
from flax import nnx


def params_of(tree) -> dict[str, np.ndarray]:
    """Float64 copies of a model's (or an nnx.State's) parameters, by name."""
    state = nnx.state(tree, nnx.Param) if isinstance(tree, nnx.Module) else tree
    named = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        parts = [str(next(getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a))) for k in path]
        named["/".join(p for p in parts if p != "value")] = np.asarray(leaf, np.float64)
    return named


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _mlp(p, prefix, h):
    """ReLU layers ``prefix/layers/i``: [B, D] -> [B, H]."""
    i = 0
    while f"{prefix}/layers/{i}/kernel" in p:
        h = np.maximum(h @ p[f"{prefix}/layers/{i}/kernel"] + p[f"{prefix}/layers/{i}/bias"], 0.0)
        i += 1
    return h


def encode(p, x, prefix="encoder"):
    """(mu, logvar, spike logit), [B, L] each, of images x [B, ...]."""
    h = _mlp(p, prefix, np.asarray(x, np.float64).reshape(len(x), -1))
    kernel, bias = p[f"{prefix}/heads/kernel"], p[f"{prefix}/heads/bias"]  # [in, 3, L], [3, L]
    heads = h @ kernel.reshape(len(kernel), -1) + bias.reshape(-1)  # [B, 3L]: mu | logvar | logit
    return np.split(heads, 3, axis=-1)


def reconstruction_nll(p, z, x, likelihood="bernoulli"):
    """-log p(x | z) summed over pixels, [B]."""
    out = _mlp(p, "decoder", z) @ p["decoder/out/kernel"] + p["decoder/out/bias"]  # [B, k * D]
    target = np.asarray(x, np.float64).reshape(len(x), -1)
    if likelihood == "bernoulli":
        return np.sum(np.maximum(out, 0) - out * target + np.log1p(np.exp(-np.abs(out))), -1)
    mean, logvar = np.split(out, 2, axis=-1)
    return np.sum(0.5 * (math.log(2 * math.pi) + logvar + (target - mean) ** 2 * np.exp(-logvar)), -1)


def gaussian_kl(mu, logvar, prior_mu=0.0, prior_logvar=0.0):
    """Elementwise KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar))."""
    return 0.5 * (prior_logvar - logvar + (np.exp(logvar) + (mu - prior_mu) ** 2) / np.exp(prior_logvar) - 1)


def bernoulli_kl(logit, prior_logit):
    """Elementwise KL(Bern(sigmoid(logit)) || Bern(sigmoid(prior_logit)))."""
    g = sigmoid(logit)
    return (g * (log_sigmoid(logit) - log_sigmoid(prior_logit))
            + (1 - g) * (log_sigmoid(-logit) - log_sigmoid(-prior_logit)))


def logit(probability):
    return np.log(probability) - np.log1p(-probability)


def _entropy(q):
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def jsd(p, q):
    """Elementwise Jensen-Shannon divergence of Bern(p) and Bern(q), probabilities in (0, 1)."""
    return _entropy((p + q) / 2) - _entropy(p) / 2 - _entropy(q) / 2


def alignment(spike_logit, labels, mode, reduce_dims):
    """The class alignment loss by its definition, with loops over samples and pairs."""
    gamma = sigmoid(spike_logit)  # [B, L]
    if mode == "pairwise":
        pairs = [jsd(gamma[a], gamma[b]).sum() for a in range(len(labels))
                 for b in range(a + 1, len(labels)) if labels[a] == labels[b]]
        loss = np.mean(pairs)
    else:
        terms = [jsd(gamma[a], gamma[labels == labels[a]].mean(0)).sum() for a in range(len(labels))
                 if np.sum(labels == labels[a]) >= 2]
        loss = np.mean(terms)
    return loss / gamma.shape[1] if reduce_dims == "mean" else loss


def spike_mask(spike_logit, eta, c, mask, offset=None):
    """The spike factor of a sample. Straight-through: the hard mask's value with the relaxed
    mask's derivative, written ``relaxed + offset`` with ``offset = hard - relaxed`` held fixed
    (computed here when None): its value is hard, its derivative the relaxed one."""
    relaxed = sigmoid(c * (eta - sigmoid(-spike_logit)))
    hard = (eta > sigmoid(-spike_logit)).astype(np.float64)  # on with probability gamma
    if mask == "relaxed":
        return relaxed
    if mask == "hard":
        return hard
    return relaxed + (hard - relaxed if offset is None else offset)


def _prior_terms(p, x, labels, mu, logvar, spike_logit, prior, alpha, sharpness):
    """(slab KL, spike KL, sparsity, offset penalty) of the training objective, [B] each."""
    zeros = np.zeros(len(labels))
    slab_std = np.sum(sigmoid(spike_logit) * gaussian_kl(mu, logvar), -1)
    if prior == "fixed":
        return slab_std, np.sum(bernoulli_kl(spike_logit, logit(alpha)), -1), zeros, zeros
    if prior == "class_mask":
        rows = p["prior/shared"][None, :] + p["prior/offset"]  # [C, L]
        own = rows[labels]  # [B, L]: the sample's class
        rho = sigmoid(own).mean(-1)  # [B]
        sparsity = own.shape[1] * bernoulli_kl(logit(rho), logit(alpha))
        penalty = np.sum(p["prior/offset"][labels] ** 2, -1)
        return slab_std, np.sum(bernoulli_kl(spike_logit, own), -1), sparsity, penalty
    # Pseudo-input prior: components from the encoder, selector-weighted KLs (authors' code).
    p_mu, p_logvar, p_raw = encode(p, p["prior/pseudo_inputs"])  # [K, L] each
    p_logit = sharpness * (sigmoid(p_raw) - 0.5)
    s = sigmoid(np.asarray(x, np.float64).reshape(len(x), -1) @ p["prior/selector/kernel"]
                + p["prior/selector/bias"])  # [B, K]
    w = s / s.sum(-1, keepdims=True)
    gamma = sigmoid(spike_logit)
    slab = np.stack([np.sum(gamma * gaussian_kl(mu, logvar, p_mu[k], p_logvar[k]), -1)
                     for k in range(len(p_mu))], -1)  # [B, K]
    spike = np.stack([np.sum(bernoulli_kl(spike_logit, p_logit[k]), -1) for k in range(len(p_mu))], -1)
    rho = (w @ sigmoid(p_logit)).mean(-1)  # [B]
    sparsity = mu.shape[1] * bernoulli_kl(logit(rho), logit(alpha))
    return np.sum(w * slab, -1), np.sum(w * spike, -1), sparsity, zeros


def training_loss(p, x, labels, eta, eps, *, prior="fixed", likelihood="bernoulli", alpha, c,
                  beta, warmup, mask, sparsity_weight, class_prior_penalty, align_mode,
                  align_weight, align_reduce_dims="sum", sharpness=10.0, mask_offset=None):
    """The training loss of one batch, float64:

        mean_B[recon + beta (slab KL + spike KL) + sparsity_weight sparsity
               + class_prior_penalty penalty] + align_weight alignment

    with the sample ``mask (warmup mu + exp(warmup logvar / 2) eps)`` and the KLs of the
    un-warmed posterior. Returns (loss, dict of the batch means of its parts).
    """
    labels = np.asarray(labels)
    mu, logvar, spike_logit = encode(p, x)
    slab = warmup * mu + np.exp(0.5 * warmup * logvar) * eps
    z = spike_mask(spike_logit, eta, c, mask, mask_offset) * slab
    recon = reconstruction_nll(p, z, x, likelihood)
    slab, spike, sparsity, penalty = _prior_terms(p, x, labels, mu, logvar, spike_logit, prior, alpha,
                                                  sharpness)
    loss = np.mean(recon + beta * (slab + spike) + sparsity_weight * sparsity + class_prior_penalty * penalty)
    parts = dict(recon=recon.mean(), kl=(slab + spike).mean(), sparsity=sparsity.mean(),
                 class_prior_penalty=penalty.mean())
    if align_mode != "off":
        parts["align"] = alignment(spike_logit, labels, align_mode, align_reduce_dims)
        loss = loss + align_weight * parts["align"]
    return loss, parts
