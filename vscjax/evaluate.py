"""Evaluate a trained workdir: exact ELBO and leak, sparsity, class consistency, linear probe.

    python -m vscjax.evaluate --workdir W [--split test] [--probe-train 5000] [--pairs 20000]
                              [--iw-samples 0] [--no-plots] [--save-codes]
                              [--coordinator_address H:P --num_processes N --process_id I]

Reads ``W/config.json`` and the newest checkpoint, evaluates on the split (the test set by
default), writes ``W/eval.json`` (``W/eval_<split>.json`` for another split), prints a table
and draws pictures into ``W/plots/``. The words follow docs/design.md, "What the metrics mean":

* **ELBO**: every model's own exact bound on -log p(x) (hard spikes; for the learned priors
  the logsumexp over the mixture's components, no label used) split into recon, slab KL, spike
  KL and component KL; the fixed-prior exact ELBO of the same q and decoder; the class-mask
  prior's label-given bound on -log p(x | y); the regularisers apart, never inside a bound.
  For models trained on the relaxed sample, the relaxed ELBO at the training c (the final
  value of the c schedule) and the leak = exact - relaxed; for straight-through models the
  leak is not applicable (null). The noise is a fixed function of the config's seed, the same
  as the trainer's evaluation, so on the validation split these match ``summary.json``.
* **sparsity**: expected active dims (mean of sum_j gamma_j), active count (mean #{gamma_j > 0.5}).
* **class consistency**: Jaccard of active sets A = {j: gamma_j > 0.5} (1 when both are empty)
  and soft Jaccard sum_j min / sum_j max of gamma, means over same-class and different-class
  pairs, and their ratio (:func:`jaccard_pairs` says which pairs); the class-specific Jaccard
  is the Jaccard with the global dimensions removed.
* **class activation**: F[c, j], the fraction of class c's samples with gamma_j > 0.5; global
  and class-specific dimensions; the class overlap matrix (:func:`class_overlap`).
* **linear probe**: logistic regression on gamma * mu of seeded training images.

Sparsity and class-consistency numbers are stated beside the leak: with a large leak the
model hides information in dimensions whose spikes are off, and those numbers mean little.
A plain VAE (Gaussian prior) has no spikes: every dimension counts as active (gamma = 1), the
spike-only parts are null in eval.json and marked "n/a" in the table, and the probe reads mu.

``--save-codes`` also writes the split's codes and labels to ``W/codes_<split>.npz``
(:func:`save_codes`), for numpy or PyTorch.

The metric functions are pure functions of numpy arrays. This module uses the models, the
math, the data and the checkpoints, never the training loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vscjax import (checkpoints, data, evaluation_loop, multihost, objective, plots, provenance,
                    rng, sharding, spike_slab)

ACTIVE_THRESHOLD = 0.5  # dimension j is active in a sample when gamma_j > 0.5
FREQUENT = 0.5  # dimension j is frequent in class c when F[c, j] >= 0.5
LEAK_WARNING_NATS = 2.0  # shipped configs keep the leak below this (docs/design.md)
ALL_PAIRS_LIMIT = 2_000_000  # jaccard_pairs scores every pair up to this many, else samples
PAIR_CHUNK_ELEMENTS = 1 << 22  # pairs x L values held at once while scoring pairs
OVERLAP_DEFINITION = "soft Jaccard of class activation frequencies: sum_j min(F_a, F_b) / sum_j max(F_a, F_b)"


# ----------------------------------------------------------------------------- metrics on codes


def soft_jaccard(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """sum_j min(u_j, v_j) / sum_j max(u_j, v_j) over the last axis, 1 where both are all zero.

    On boolean active sets this is the Jaccard |A & B| / |A | B|; on gamma the soft Jaccard.
    ``u`` and ``v`` ([..., L], values >= 0) broadcast against each other; returns [...].
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    inter = np.minimum(u, v).sum(axis=-1)
    union = np.maximum(u, v).sum(axis=-1)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


def jaccard_pairs(active: np.ndarray, labels: np.ndarray, *, num_pairs: int = 20_000, seed=0,
                  all_pairs_limit: int = ALL_PAIRS_LIMIT) -> dict:
    """Mean :func:`soft_jaccard` over same-class pairs and over different-class pairs.

    Pass boolean active sets (gamma > 0.5) for the Jaccard, gamma for the soft Jaccard.
    Pairs: every unordered pair of samples when there are at most ``all_pairs_limit`` of them;
    otherwise ``num_pairs`` pairs of each kind, drawn i.i.d. uniformly from the pairs of that
    kind with ``default_rng(seed)`` (an int or a list of ints). Memory: ``PAIR_CHUNK_ELEMENTS``
    values at a time.

    Args:
      active: [N, L] values in [0, 1].
      labels: [N] class labels.

    Returns:
      dict: same, different (means; None without pairs of the kind), ratio (same / different;
      None when undefined), same_pairs, different_pairs (pairs scored), same_both_empty,
      different_both_empty (fractions of those pairs with both rows zero, which score 1),
      all_pairs (bool).
    """
    values = np.asarray(active, np.float32)  # [N, L]
    labels = np.asarray(labels)
    n = len(labels)
    exhaustive = n * (n - 1) // 2 <= all_pairs_limit
    if exhaustive:
        a, b = np.triu_indices(n, 1)
        same = labels[a] == labels[b]
        pairs = {"same": (a[same], b[same]), "different": (a[~same], b[~same])}
    else:
        generator = np.random.default_rng(seed)
        pairs = {"same": _sample_same_class_pairs(labels, num_pairs, generator),
                 "different": _sample_different_class_pairs(labels, num_pairs, generator)}
    empty = ~values.any(axis=1)  # [N]
    out = {"all_pairs": exhaustive}
    for kind, (a, b) in pairs.items():
        scores = _pair_scores(values, a, b)  # [P]
        out[kind] = float(scores.mean()) if len(scores) else None
        out[f"{kind}_pairs"] = len(scores)
        out[f"{kind}_both_empty"] = float(np.mean(empty[a] & empty[b])) if len(scores) else None
    out["ratio"] = out["same"] / out["different"] if out["same"] is not None and out["different"] else None
    return out


def _pair_scores(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """soft_jaccard(values[a[p]], values[b[p]]) for every pair p, in memory-bounded chunks: [P]."""
    chunk = max(1, PAIR_CHUNK_ELEMENTS // max(values.shape[1], 1))
    scores = np.empty(len(a))
    for s in range(0, len(a), chunk):
        scores[s:s + chunk] = soft_jaccard(values[a[s:s + chunk]], values[b[s:s + chunk]])
    return scores


def _class_blocks(labels: np.ndarray):
    """(order, inverse, starts, counts): samples sorted by class; class k of the sorted unique
    labels is ``order[starts[k]:starts[k] + counts[k]]``; ``inverse`` [N] is each sample's k."""
    order = np.argsort(labels, kind="stable")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, inverse, starts, counts


def _sample_same_class_pairs(labels, num, rng):
    """``num`` pairs (a, b), a != b, uniform over same-class pairs: ([num], [num]) indices."""
    order, _, starts, counts = _class_blocks(labels)
    weights = counts * (counts - 1.0)  # ordered pairs within each class
    if not weights.sum():
        return np.zeros(0, int), np.zeros(0, int)
    k = rng.choice(len(counts), num, p=weights / weights.sum())
    i = rng.integers(0, counts[k])
    j = rng.integers(0, counts[k] - 1)
    j = j + (j >= i)  # a second, different member of the class
    return order[starts[k] + i], order[starts[k] + j]


def _sample_different_class_pairs(labels, num, rng):
    """``num`` pairs (a, b) uniform over pairs of different classes: ([num], [num]) indices."""
    order, inverse, starts, counts = _class_blocks(labels)
    others = len(labels) - counts[inverse]  # [N] samples of the other classes
    if not others.sum():
        return np.zeros(0, int), np.zeros(0, int)
    a = rng.choice(len(labels), num, p=others / others.sum())
    k = rng.integers(0, others[a])  # position among the other classes' samples
    block = inverse[a]
    return a, order[np.where(k < starts[block], k, k + counts[block])]


def activation_frequency(gamma: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """F[c, j] = fraction of the samples of class c with gamma_j > 0.5: [C, L].

    Args:
      gamma: [N, L] spike probabilities.
      labels: [N] in [0, num_classes); every class needs at least one sample.
    """
    active = np.asarray(gamma) > ACTIVE_THRESHOLD  # [N, L]
    labels = np.asarray(labels)
    missing = [c for c in range(num_classes) if not np.any(labels == c)]
    if missing:
        raise ValueError(f"classes {missing} have no samples; activation frequencies need every class")
    return np.stack([active[labels == c].mean(axis=0) for c in range(num_classes)])  # [C, L]


def shared_and_specific(freq: np.ndarray) -> dict:
    """Global and class-specific dimensions of an activation frequency matrix F [C, L].

    A dimension is global if F[c, j] >= 0.5 for every class, class-specific if for exactly one.

    Returns:
      dict: global_dims (list), specific_dims (one list per class), specific_count (per class),
      num_global, num_specific.
    """
    frequent = np.asarray(freq) >= FREQUENT  # [C, L]
    num_classes = frequent.shape[0]
    classes_per_dim = frequent.sum(axis=0)  # [L]
    specific = classes_per_dim == 1
    owner = np.argmax(frequent, axis=0)  # [L] the (first) class a dimension is frequent in
    specific_dims = [np.flatnonzero(specific & (owner == c)).tolist() for c in range(num_classes)]
    global_dims = np.flatnonzero(classes_per_dim == num_classes).tolist()
    return dict(global_dims=global_dims, specific_dims=specific_dims,
                specific_count=[len(d) for d in specific_dims],
                num_global=len(global_dims), num_specific=int(specific.sum()))


def class_overlap(freq: np.ndarray) -> np.ndarray:
    """Class-by-class overlap: soft Jaccard of the classes' activation frequencies, [C, C].

    overlap[a, b] = sum_j min(F[a, j], F[b, j]) / sum_j max(F[a, j], F[b, j]) (1 when both rows
    are zero): symmetric, ones on the diagonal, 0 for classes whose active dimensions never
    coincide, and free of the 0.5 threshold that defines frequent dimensions.
    """
    freq = np.asarray(freq, np.float64)  # [C, L]
    return np.stack([soft_jaccard(row, freq) for row in freq])  # [C, C]


def linear_probe(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                 test_labels: np.ndarray, *, max_iter: int = 2000) -> dict:
    """Multinomial logistic regression (scikit-learn, standardised features) on latent codes.

    Args:
      train_codes, test_codes: [N, L] features (gamma * mu for VSC, mu for a VAE).
      train_labels, test_labels: [N] class labels.
      max_iter: L-BFGS iterations.

    Returns:
      dict: accuracy (test), train_accuracy, converged (L-BFGS stopped before max_iter).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as converged=False
        probe.fit(train_codes, train_labels)
    return dict(accuracy=float(probe.score(test_codes, test_labels)),
                train_accuracy=float(probe.score(train_codes, train_labels)),
                converged=bool(np.max(probe[-1].n_iter_) < max_iter))


# ----------------------------------------------------------------------------- importance sampling


def _log_normal(value, mean, log_variance):
    return -0.5 * (math.log(2 * math.pi) + log_variance
                   + jnp.square(value - mean) * jnp.exp(-log_variance))


def log_prior_over_posterior(z, mu, logvar, spike_logit, prior: objective.PriorMixture | None) -> jax.Array:
    """log p(z) - log q(z | x), summed over L, for a hard-spike sample z [B, L].

    Densities are with respect to the mixed measure (an atom at 0 plus Lebesgue) on each
    dimension: z_j = 0 (spike off) has mass 1 - gamma_j under q and 1 - pi_kj under prior
    component k; z_j != 0 has density gamma_j N(z_j; mu_j, sigma_j^2) under q and
    pi_kj N(z_j; m_kj, s_kj^2) under component k. The prior is the mixture
    ``p(z) = sum_k w_k p_k(z)`` (:func:`objective.prior_mixture`; one component for the fixed
    prior). ``spike_logit`` None: the plain VAE, q Gaussian and p = N(0, I).
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


def iw_neg_log_likelihood(model, x, key, *, alpha, num_samples: int) -> jax.Array:
    """Importance-sampled upper bound on -log p(x) with hard spikes, [B].

    ``-log mean_k exp(log p(x | z_k) + log p(z_k) - log q(z_k | x))`` over ``num_samples``
    hard-spike posterior samples (one at a time, so memory does not grow with K), for every
    prior: the fixed one, the plain VAE's N(0, I), and the learned priors as the mixtures
    whose bound ``objective.eval_terms`` reports.
    """
    mu, logvar, spike_logit = model.encode(x)  # [B, L] each
    prior = None if spike_logit is None else objective.prior_mixture(model, alpha)

    def log_weight(sample_key):  # [B]
        if spike_logit is None:
            z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(sample_key, mu.shape, mu.dtype)
        else:  # c is unused by the hard mask
            z = spike_slab.sample(sample_key, mu, logvar, spike_logit, c=1.0, mask="hard")
        return -model.reconstruction_nll(z, x) + log_prior_over_posterior(z, mu, logvar, spike_logit, prior)

    log_weights = jax.lax.map(log_weight, jax.random.split(key, num_samples))  # [K, B]
    return math.log(num_samples) - jax.nn.logsumexp(log_weights, axis=0)


# ----------------------------------------------------------------------------- running the model


@dataclasses.dataclass(frozen=True)
class Codes:
    """Posterior heads of a set of images, on the host."""

    mu: np.ndarray  # [N, L]
    logvar: np.ndarray  # [N, L]
    gamma: np.ndarray  # [N, L]; all ones for a plain VAE (every dimension active)
    spikes: bool  # False for a plain VAE

    @property
    def probe_features(self) -> np.ndarray:
        """gamma * mu: [N, L] (mu for a plain VAE)."""
        return self.gamma * self.mu

    @property
    def mean_code(self) -> np.ndarray:
        """The posterior mean code: slab mean where gamma > 0.5, else 0: [N, L]."""
        return np.where(self.gamma > ACTIVE_THRESHOLD, self.mu, 0.0).astype(np.float32)


@functools.partial(jax.jit, static_argnames="graphdef")
def _batch_codes(params, batch_index, images, *, graphdef):
    """mu, logvar [B, L] and gamma [B, L] (None for a plain VAE) of one batch."""
    del batch_index  # encoding draws no noise
    mu, logvar, spike_logit = nnx.merge(graphdef, params).encode(images)
    return mu, logvar, None if spike_logit is None else jax.nn.sigmoid(spike_logit)


def encode_images(graphdef, params, images: np.ndarray, batch_size: int, mesh) -> Codes:
    """Encode images [N, H, W, C] in jitted batches split over ``mesh`` (params replicated)."""
    mu, logvar, gamma = evaluation_loop.map_batches(
        functools.partial(_batch_codes, graphdef=graphdef), params, (images,),
        batch_size=batch_size, mesh=mesh)
    if gamma is None:  # plain VAE: every dimension active
        return Codes(mu=mu, logvar=logvar, gamma=np.ones_like(mu), spikes=False)
    return Codes(mu=mu, logvar=logvar, gamma=gamma, spikes=True)


@functools.partial(jax.jit, static_argnames=("graphdef", "seed", "alpha", "num_samples"))
def _batch_iw_bound(params, batch_index, images, *, graphdef, seed, alpha, num_samples):
    """:func:`iw_neg_log_likelihood` of one batch with its own noise: [B]."""
    key = jax.random.fold_in(rng.key(seed, "iw"), batch_index)
    return iw_neg_log_likelihood(nnx.merge(graphdef, params), images, key, alpha=alpha,
                                 num_samples=num_samples)


def iw_bound(graphdef, params, config, images: np.ndarray, num_samples: int, mesh) -> np.ndarray:
    """Per-sample :func:`iw_neg_log_likelihood` in jitted batches split over ``mesh``, [N]."""
    bound = functools.partial(_batch_iw_bound, graphdef=graphdef, seed=config.seed,
                              alpha=config.objective.alpha, num_samples=num_samples)
    return evaluation_loop.map_batches(bound, params, (images,),
                                       batch_size=config.train.eval_batch_size, mesh=mesh)


def evaluation_mesh(batch_size: int) -> jax.sharding.Mesh:
    """The mesh evaluation runs on: all devices, or with a single process the most of them
    that ``batch_size`` splits over (a run may be evaluated on another machine than its own)."""
    devices = jax.devices()
    if jax.process_count() == 1:
        devices = devices[:max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)]
    return sharding.make_data_mesh(devices)


# ----------------------------------------------------------------------------- the report


BOUND_DEFINITIONS = {
    "fixed": "exact negative ELBO under the fixed prior alpha N(0, 1) + (1 - alpha) delta(0)",
    "class_mask": "-logsumexp_y(log p(y) + ELBO_y(x)), p(y) = 1/C: the class-mask prior as a "
                  "mixture over classes, no label used",
    "pseudo_inputs": "-logsumexp_k(log(1/K) + ELBO_k(x)): the pseudo-input prior as a uniform "
                     "mixture of its K components (training uses the authors' x-dependent "
                     "selector weights, which give no bound)",
    "gaussian": "exact negative ELBO under N(0, I)",
}


def _elbo_section(terms: dict, config, step: int, spikes: bool, iw: np.ndarray | None,
                  iw_samples: int) -> dict:
    mean = lambda name: float(np.mean(terms[name], dtype=np.float64))  # noqa: E731
    prior = config.model.prior
    learned = prior in ("class_mask", "pseudo_inputs")
    relaxed_training = spikes and objective.leak_applies(config.objective)
    return dict(
        exact_neg_elbo=mean("exact"), bound_definition=BOUND_DEFINITIONS[prior],
        recon=mean("recon"), slab_kl=mean("slab_kl"),
        spike_kl=mean("spike_kl") if spikes else None,
        component_kl=mean("component_kl") if learned else None,
        fixed_prior_exact_neg_elbo=mean("fixed_prior_exact") if spikes else None,
        class_conditional_neg_elbo=mean("class_conditional_exact") if prior == "class_mask" else None,
        regularisers={name: mean(name) for name in objective.REGULARISERS} if learned else None,
        relaxed_neg_elbo=mean("relaxed") if relaxed_training else None,
        leak=mean("leak") if relaxed_training else None,
        c=float(objective.schedule_value(config.objective.c, step)) if spikes else None,
        iw_nll=None if iw is None else float(np.mean(iw, dtype=np.float64)),
        iw_samples=iw_samples)


def _class_sections(codes: Codes, labels: np.ndarray, num_classes: int, pairs: int, seed: list[int],
                    leak) -> tuple[dict | None, dict | None]:
    """The class-consistency and class-activation sections (None for a plain VAE)."""
    if not codes.spikes:
        return None, None
    active = codes.gamma > ACTIVE_THRESHOLD  # [N, L]
    freq = activation_frequency(codes.gamma, labels, num_classes)  # [C, L]
    dims = shared_and_specific(freq)
    not_global = np.setdiff1d(np.arange(active.shape[1]), dims["global_dims"])
    consistency = dict(
        leak=leak,
        jaccard=jaccard_pairs(active, labels, num_pairs=pairs, seed=seed),
        soft_jaccard=jaccard_pairs(codes.gamma, labels, num_pairs=pairs, seed=seed),
        # Global dimensions raise different-class overlap by construction: the same Jaccard
        # with them removed.
        class_specific_jaccard=jaccard_pairs(active[:, not_global], labels, num_pairs=pairs, seed=seed))
    activation = dict(leak=leak, frequency=freq.round(6).tolist(), **dims,
                      overlap=class_overlap(freq).round(6).tolist(),
                      overlap_definition=OVERLAP_DEFINITION)
    return consistency, activation


def _notes(config, spikes: bool, leak, iw_samples: int) -> list[str]:
    notes = []
    if not spikes:
        notes.append("plain VAE (Gaussian prior): no spikes; every dimension counts as active "
                     "(gamma = 1); spike KL, relaxed ELBO, leak, Jaccard and class activation are "
                     "not applicable (null); the probe reads mu")
    if spikes and config.objective.mask != "relaxed":
        notes.append(f"trained on hard spikes ({config.objective.mask}): no information can pass "
                     "through a dimension whose spike is off, so the leak (exact - relaxed ELBO) "
                     "is not applicable")
    if leak is not None and leak > LEAK_WARNING_NATS:
        notes.append(f"leak {leak:.2f} nats > {LEAK_WARNING_NATS:g}: information passes through "
                     "dimensions whose spikes are off, so the sparsity and class-consistency "
                     "numbers are unreliable")
    return notes


def headline(results: dict) -> dict:
    """The numbers a report row shows, from :func:`evaluate_workdir`'s results (an eval.json):
    the bound, the fixed-prior ELBO, the leak, active dims, Jaccard pairs, global and
    class-specific dims and the probe; None where a number does not apply to the model."""
    e, s = results["elbo"], results["sparsity"]
    cc, act = results["class_consistency"], results["class_activation"]
    pick = lambda name, kind: cc[name][kind] if cc else None  # noqa: E731
    return dict(
        bound=e["exact_neg_elbo"], fixed_prior=e["fixed_prior_exact_neg_elbo"], leak=e["leak"],
        expected_active=s["expected_active"], confident=s["active_count"],
        jaccard_same=pick("jaccard", "same"), jaccard_different=pick("jaccard", "different"),
        soft_same=pick("soft_jaccard", "same"), soft_different=pick("soft_jaccard", "different"),
        specific_same=pick("class_specific_jaccard", "same"),
        specific_different=pick("class_specific_jaccard", "different"),
        num_global=act["num_global"] if act else None,
        specific_count=act["specific_count"] if act else None,
        probe=results["linear_probe"]["accuracy"])


def evaluate_workdir(workdir: str, *, split: str = "test", probe_train: int = 5000,
                     pairs: int = 20_000, iw_samples: int = 0, make_plots: bool = True,
                     top_k: int = 3, save_split_codes: bool = False) -> dict:
    """Evaluate the newest checkpoint of a train.py workdir; write eval.json and pictures.

    Args:
      workdir: the training run's folder (config.json and checkpoints/).
      split: the data split evaluated ("test").
      probe_train: training images (a seeded sample) the linear probe learns from.
      pairs: pairs of each kind for the Jaccard means when the split has too many to score all.
      iw_samples: K of the importance-sampled NLL bound; 0 skips it.
      make_plots: draw latent traversals, the class activation heatmap and the overlap matrix
        into ``<workdir>/plots``.
      top_k: dimensions traversed per class.
      save_split_codes: write the split's codes and labels to :func:`codes_path` (its path is
        then the results' "codes").

    Returns:
      The results (also written to ``<workdir>/eval.json``, or ``eval_<split>.json``).

    With several processes every process calls it and computes the same results, each feeding
    its own rows of every batch; process 0 alone writes the files.
    """
    config = checkpoints.read_config(workdir)
    d = config.data
    dataset = data.load(d.source, d.name, split, data_dir=d.dir, mirror=d.mirror)
    train_set = (dataset if split == "train"
                 else data.load(d.source, d.name, "train", data_dir=d.dir, mirror=d.mirror))
    if dataset.labels.max(initial=0) >= train_set.num_classes:
        raise data.DataError(f"{dataset.name}: labels span [{dataset.labels.min()}, {dataset.labels.max()}], "
                             f"outside the {train_set.num_classes} classes of {train_set.name}")
    # A split's class count is the training set's (IDX files give each split its own).
    dataset = dataclasses.replace(dataset, num_classes=train_set.num_classes)
    batch_size = config.train.eval_batch_size
    mesh = evaluation_mesh(batch_size)
    config, graphdef, state = checkpoints.load_trained(workdir, dataset.images.shape[1:],
                                                       dataset.num_classes,
                                                       sharding=sharding.replicated(mesh))
    params, step = state.params, int(jax.device_get(state.step))

    terms = evaluation_loop.elbo_terms(graphdef, params, config, dataset.images, dataset.labels,
                                       step=step, mesh=mesh)
    codes = encode_images(graphdef, params, dataset.images, batch_size, mesh)
    iw = (iw_bound(graphdef, params, config, dataset.images, iw_samples, mesh)
          if iw_samples > 0 else None)
    elbo = _elbo_section(terms, config, step, codes.spikes, iw, iw_samples)
    leak = elbo["leak"]
    consistency, activation = _class_sections(codes, dataset.labels, dataset.num_classes, pairs,
                                              rng.numpy_seed(config.seed, "pairs"), leak)
    generator = np.random.default_rng(rng.numpy_seed(config.seed, "probe"))
    probe_idx = np.sort(generator.choice(len(train_set.labels), min(probe_train, len(train_set.labels)),
                                         replace=False))
    probe_codes = encode_images(graphdef, params, train_set.images[probe_idx], batch_size, mesh)
    results = dict(
        workdir=os.path.abspath(workdir), step=step, split=split, data=dataset.name,
        num_examples=len(dataset.labels), num_classes=dataset.num_classes,
        model=dict(prior=config.model.prior, latent_dim=config.model.latent_dim, spikes=codes.spikes),
        elbo=elbo,
        sparsity=dict(leak=leak, expected_active=float(np.mean(terms["expected_active"])),
                      active_count=float(np.mean(terms["active_count"]))),
        class_consistency=consistency, class_activation=activation,
        linear_probe=dict(code="gamma * mu" if codes.spikes else "mu", train_examples=len(probe_idx),
                          **linear_probe(probe_codes.probe_features, train_set.labels[probe_idx],
                                         codes.probe_features, dataset.labels)),
        notes=_notes(config, codes.spikes, leak, iw_samples),
        provenance=provenance.record())
    model = nnx.merge(graphdef, sharding.local_copy(params))  # this process's own copy
    if config.model.prior == "class_mask":
        results["class_masks"] = np.asarray(model.prior.masks()).round(6).tolist()  # [C, L]
    if multihost.is_writer():
        if make_plots:
            results["plots"] = draw_plots(model, codes, dataset.labels, activation,
                                          os.path.join(workdir, "plots"), top_k=top_k)
        if save_split_codes:
            results["codes"] = save_codes(codes_path(workdir, split), codes, dataset.labels, split)
        with open(results_path(workdir, split), "w") as f:
            f.write(_dumps(results) + "\n")
    return results


def results_path(workdir: str, split: str = "test") -> str:
    """Where :func:`evaluate_workdir` writes: ``eval.json``, or ``eval_<split>.json``."""
    return os.path.join(workdir, "eval.json" if split == "test" else f"eval_{split}.json")


def codes_path(workdir: str, split: str = "test") -> str:
    """Where ``--save-codes`` writes the codes of ``split``: ``codes_<split>.npz``."""
    return os.path.join(workdir, f"codes_{split}.npz")


def save_codes(path: str, codes: Codes, labels: np.ndarray, split: str) -> str:
    """Write codes and labels to an ``.npz`` that numpy reads (``np.load(path)``) without pickle.

    Arrays: mu, logvar, gamma ([N, L] float32; gamma all ones for a plain VAE), labels ([N]
    int32) and split (a 0-d string array). Written to a temporary file, then renamed.

    Returns:
      The absolute path written.
    """
    path = os.path.abspath(path)
    with open(path + ".tmp", "wb") as f:
        np.savez(f, mu=codes.mu, logvar=codes.logvar, gamma=codes.gamma,
                 labels=np.asarray(labels, np.int32), split=np.array(split))
    os.replace(path + ".tmp", path)
    return path


# ----------------------------------------------------------------------------- pictures


def top_dims(codes: Codes, index: int, k: int) -> np.ndarray:
    """The k dimensions of sample ``index`` with the largest gamma, ties (the VAE's gamma = 1)
    broken by the dimension's KL of the slab to N(0, 1): [k]."""
    mu, logvar = codes.mu[index], codes.logvar[index]
    slab_kl = 0.5 * (np.exp(logvar) + mu**2 - 1.0 - logvar)  # [L]
    return np.lexsort((-slab_kl, -codes.gamma[index]))[:k]


def factor_rows(codes: Codes, labels: np.ndarray, activation: dict, *,
                max_global: int = 2) -> list[tuple[int, int, str]]:
    """(sample, dimension, row label) for traversals of shared and class-specific factors.

    Global dimensions (the ``max_global`` with the largest smallest-class frequency): traversed
    on one image of every class. Class-specific dimensions: for each class, its most frequent
    specific dimension, traversed on the first image of the class where it is active.
    """
    freq = np.asarray(activation["frequency"])  # [C, L]
    rows = []
    global_dims = sorted(activation["global_dims"], key=lambda j: -freq[:, j].min())[:max_global]
    for j in global_dims:
        for c in range(freq.shape[0]):
            i = int(np.argmax(labels == c))
            rows.append((i, j, f"global dim {j}, class {c}"))
    for c, dims in enumerate(activation["specific_dims"]):
        if not dims:
            continue
        j = max(dims, key=lambda d: freq[c, d])
        candidates = np.flatnonzero((labels == c) & (codes.gamma[:, j] > ACTIVE_THRESHOLD))
        i = int(candidates[0]) if len(candidates) else int(np.argmax(labels == c))
        rows.append((i, j, f"class {c} dim {j} (F {freq[c, j]:.2f})"))
    return rows


def _traversal(model, codes: Codes, rows, path: str, title: str) -> str:
    index, dims = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    return plots.latent_traversals(
        lambda z: model.mean_image(jnp.asarray(z)), codes.mean_code[index], dims,
        codes.mu[index, dims], path, row_labels=[r[2] for r in rows], title=title)


def draw_plots(model, codes: Codes, labels: np.ndarray, activation: dict | None, plot_dir: str,
               *, top_k: int = 3) -> list[str]:
    """Latent traversals (always) and, with spikes, the class activation heatmap, the class
    overlap matrix, traversals of the global and class-specific dimensions (where there are
    any) and the learned class masks (class-mask prior), into ``plot_dir``. Returns the paths
    written."""
    exemplars = [int(np.argmax(labels == c)) for c in np.unique(labels)]  # first sample per class
    rows = [(i, j, f"class {labels[i]} dim {j} (γ {codes.gamma[i, j]:.2f})" if codes.spikes
             else f"class {labels[i]} dim {j}")
            for i in exemplars for j in top_dims(codes, i, top_k)]  # (sample, dim, label)
    paths = [_traversal(model, codes, rows, os.path.join(plot_dir, "latent_traversals.png"),
                        f"top-{top_k} dimensions of one image per class: mu + offset, spike on")]
    if activation is not None:
        freq = np.asarray(activation["frequency"])
        paths.append(plots.class_activation_heatmap(freq, os.path.join(plot_dir, "class_activation.png")))
        factors = factor_rows(codes, labels, activation)
        if factors:
            paths.append(_traversal(model, codes, factors, os.path.join(plot_dir, "factor_traversals.png"),
                                    "global dimensions (on every class) and each class's most frequent "
                                    "specific dimension: mu + offset, spike on"))
        paths.append(plots.class_overlap_matrix(
            np.asarray(activation["overlap"]), os.path.join(plot_dir, "class_overlap.png"),
            title="class overlap: sum min(F_a, F_b) / sum max(F_a, F_b)"))
    if getattr(model, "prior_kind", None) == "class_mask":
        paths.append(plots.class_activation_heatmap(
            np.asarray(model.prior.masks()), os.path.join(plot_dir, "class_masks.png"),
            title="learned class masks: prior spike probability sigmoid(g_j + h_cj)",
            what="prior probability"))
    return paths


# ----------------------------------------------------------------------------- output


def _dumps(value, indent: int = 0) -> str:
    """JSON with nested dicts indented and each list (a matrix: each row) on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "[\n" + ",\n".join(inner + json.dumps(row) for row in value) + f"\n{pad}]"
    return json.dumps(value)


def _num(value, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def format_report(results: dict) -> str:
    """The results as a readable table."""
    e, s, m = results["elbo"], results["sparsity"], results["model"]
    leak = "leak n/a" if e["leak"] is None else f"leak {_num(e['leak'])} nats"
    lines = [
        f"{results['workdir']}: step {results['step']}, {results['data']} ({results['num_examples']} "
        f"images), prior {m['prior']}, L={m['latent_dim']}",
        "",
        f"ELBO (nats per sample; exact = hard spikes, relaxed at the training c={_num(e['c'], 'g')})",
        f"  exact -ELBO      {e['exact_neg_elbo']:9.2f}   recon {e['recon']:.2f}  slab KL "
        f"{e['slab_kl']:.2f}  spike KL {_num(e['spike_kl'])}"
        + ("" if e["component_kl"] is None else f"  component KL {e['component_kl']:.2f}"),
        f"    = bound on -log p(x): {e['bound_definition']}",
        f"  relaxed -ELBO    {_num(e['relaxed_neg_elbo'], '9.2f')}   {leak}",
    ]
    if m["prior"] in ("class_mask", "pseudo_inputs"):
        r = e["regularisers"]
        lines.append(f"  fixed-prior exact -ELBO {e['fixed_prior_exact_neg_elbo']:9.2f}   (same q and "
                     f"decoder under the alpha prior)")
        if e["class_conditional_neg_elbo"] is not None:
            lines.append(f"  class-conditional -ELBO {e['class_conditional_neg_elbo']:9.2f}   (bound on "
                         f"-log p(x | y), label given)")
        lines.append("  regularisers (not in any bound): "
                     + ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in r.items()))
    if e["iw_nll"] is not None:
        lines.append(f"  IW NLL bound     {e['iw_nll']:9.2f}   (K={e['iw_samples']} hard-spike samples)")
    lines += ["", f"Sparsity ({leak})",
              f"  expected active dims {s['expected_active']:.2f} of {m['latent_dim']}",
              f"  active count (gamma > 0.5) {s['active_count']:.2f}"]
    cc, act = results["class_consistency"], results["class_activation"]
    if cc is not None:
        j = cc["jaccard"]
        pairs = ("all pairs" if j["all_pairs"] else "sampled pairs") + \
            f": {j['same_pairs']:,} same-class, {j['different_pairs']:,} different-class"
        lines += ["", f"Class consistency ({leak}; {pairs})",
                  f"  {'':24}{'same':>8}{'different':>11}{'ratio':>8}"]
        for name in ("jaccard", "soft_jaccard", "class_specific_jaccard"):
            r = cc[name]
            lines.append(f"  {name.replace('_', ' '):24}{_num(r['same'], '8.3f')}"
                         f"{_num(r['different'], '11.3f')}{_num(r['ratio'], '8.2f')}")
        if j["same_both_empty"] or j["different_both_empty"]:
            lines.append(f"  pairs with both active sets empty (Jaccard 1): "
                         f"{_num(j['same_both_empty'], '.1%')} same-class, "
                         f"{_num(j['different_both_empty'], '.1%')} different-class")
        per_class = " ".join(f"{c}:{n}" for c, n in enumerate(act["specific_count"]))
        overlap = np.asarray(act["overlap"])
        off_diagonal = overlap[~np.eye(len(overlap), dtype=bool)]
        lines += ["", f"Class activation (F[c, j] >= 0.5; {leak})",
                  f"  global dims {act['num_global']}: {act['global_dims']}",
                  f"  class-specific dims {act['num_specific']}, per class {per_class}",
                  f"  class overlap (soft Jaccard of F rows), mean off-diagonal "
                  f"{_num(float(off_diagonal.mean()) if off_diagonal.size else None, '.3f')}"]
    p = results["linear_probe"]
    lines += ["", f"Linear probe on {p['code']} ({p['train_examples']} training images): test "
                  f"accuracy {p['accuracy']:.3f} (train {p['train_accuracy']:.3f}"
                  f"{'' if p['converged'] else ', not converged'})"]
    lines += [f"NOTE: {note}" for note in results["notes"]]
    return "\n".join(lines)


def main(argv=None) -> None:
    """The command line: evaluate a workdir, print the table."""
    parser = argparse.ArgumentParser(prog="python -m vscjax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a train.py workdir")
    parser.add_argument("--split", default="test", help="data split to evaluate (default: test)")
    parser.add_argument("--probe-train", type=int, default=5000,
                        help="training images the linear probe learns from (default: 5000)")
    parser.add_argument("--pairs", type=int, default=20_000,
                        help="pairs of each kind sampled for the Jaccard when the split has too "
                             "many to score all (default: 20000)")
    parser.add_argument("--iw-samples", type=int, default=0,
                        help="K of the importance-sampled NLL bound (default: 0, off)")
    parser.add_argument("--no-plots", action="store_true", help="draw no pictures")
    parser.add_argument("--save-codes", action="store_true",
                        help="write the split's codes (mu, logvar, gamma) and labels to "
                             "<workdir>/codes_<split>.npz")
    parser.add_argument("--coordinator_address", help=multihost.FLAG_HELP["coordinator_address"])
    parser.add_argument("--num_processes", type=int, help=multihost.FLAG_HELP["num_processes"])
    parser.add_argument("--process_id", type=int, help=multihost.FLAG_HELP["process_id"])
    parser.add_argument("--heartbeat_timeout", type=int, default=multihost.DEFAULT_HEARTBEAT_TIMEOUT,
                        help=multihost.FLAG_HELP["heartbeat_timeout"])
    args = parser.parse_args(argv)
    try:
        multihost.initialize(args.coordinator_address, args.num_processes, args.process_id,
                             heartbeat_timeout=args.heartbeat_timeout)
        results = evaluate_workdir(args.workdir, split=args.split, probe_train=args.probe_train,
                                   pairs=args.pairs, iw_samples=args.iw_samples,
                                   make_plots=not args.no_plots, save_split_codes=args.save_codes)
    except (FileNotFoundError, data.DataError, ValueError) as err:
        sys.exit(f"vscjax.evaluate: {err}")
    if multihost.is_writer():
        print(format_report(results))
        print(f"results in {os.path.abspath(results_path(args.workdir, args.split))}")
        if args.save_codes:
            print(f"codes in {results['codes']}")
    multihost.finish()


if __name__ == "__main__":
    main()
