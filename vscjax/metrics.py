"""Metrics of latent codes: pure NumPy and scikit-learn functions of arrays on the host.

The words follow docs/design.md, "What the metrics mean":

* **active**: dimension j of a sample is active when gamma_j > 0.5 (``ACTIVE_THRESHOLD``); the
  **active count** of a sample is its number of active dimensions;
* **Jaccard** of two samples' active sets and **soft Jaccard** of their gamma
  (:func:`soft_jaccard`), averaged over same-class and different-class pairs
  (:func:`jaccard_pairs`);
* **class activation frequency** F[c, j] (:func:`activation_frequency`), the **global** and
  **class-specific** dimensions it defines (:func:`shared_and_specific`), and the **class
  overlap** of its rows (:func:`class_overlap`);
* the **linear probe** (:func:`linear_probe`).

Metrics against known ground-truth factors belong in a module of their own.
"""

from __future__ import annotations

import warnings

import numpy as np

ACTIVE_THRESHOLD = 0.5  # dimension j is active in a sample when gamma_j > 0.5
FREQUENT = 0.5  # dimension j is frequent in class c when F[c, j] >= 0.5
ALL_PAIRS_LIMIT = 2_000_000  # jaccard_pairs scores every pair up to this many, else samples
PAIR_CHUNK_ELEMENTS = 1 << 22  # pairs x L values held at once while scoring pairs
OVERLAP_DEFINITION = "soft Jaccard of class activation frequencies: sum_j min(F_a, F_b) / sum_j max(F_a, F_b)"


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
