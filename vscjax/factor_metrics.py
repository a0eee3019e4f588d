"""Metrics against known generative factors: how well, and where, a code holds each factor.

Inputs are arrays: the code ``z = gamma * mu`` [N, L] (or gamma and mu), the labels [N] and
the factors [N, K] of a data set that knows them (``vscjax.data.Dataset.factors``), NaN where
an image's class lacks a factor. A factor present in every image is **global**; one present
in the images of a single class is **specific** to that class, and is scored on that class's
images alone.

- **normalised mutual information** ``I(v_k; z_j) / H(v_k)`` between factor k and dimension j
  (the disentanglement literature's estimator): ``z_j`` binned into ``NUM_BINS`` equal-width
  bins over its range on the images scored, the factor's distinct values as its categories,
  plug-in entropies in nats. 1 when the bins tell every value of the factor apart, 0 for a
  dimension independent of it, plus the plug-in estimator's positive bias of about
  ``(B - 1)(V - 1) / 2n`` nats (B occupied bins, V factor values, n images scored). This bias
  is the **floor** a dimension that knows nothing of a factor scores. On the full shapes grid
  (``vscjax.shapes``), for a dimension spread evenly over its bins (the worst case; measured
  by ``tests/test_factor_metrics.py``): a class's 5-valued factor, scored on its class's
  images, floor 0.11 on the validation split and 0.04 on the test split; x (12 values, every
  image), floor 0.04 on the validation split and 0.01 on the test split. So read a class
  factor's best MI against its second, and a capture (0.3) as several times the floor.
- **MIG** (mutual information gap): the mean over factors of the gap between the two largest
  normalised MIs of a factor: 1 when each factor sits in one dimension alone.
- **DCI disentanglement** (Eastwood and Williams, 2018): a seeded gradient-boosted regressor
  per factor gives the importance R[j, k] of dimension j for factor k; each dimension scores
  ``1 - H_K(R[j] / sum_k R[j, k])`` (entropy in base K, the number of factors), weighted by its
  share of all importance.
- **placement**: a factor is *captured* when its largest normalised MI is at least
  ``CAPTURED``; a captured global factor is *placed* when that dimension is global (active,
  gamma > 0.5, in at least half of every class's images), a captured class-specific factor
  when its dimension is specific to the factor's own class (so in at least half of that
  class's images and of no other's).

NumPy and scikit-learn only, no model, no JAX.
"""

from __future__ import annotations

import numpy as np

from vscjax.metrics import activation_frequency, shared_and_specific

NUM_BINS = 20  # equal-width bins of a code dimension
CAPTURED = 0.3  # a factor is captured when its largest normalised MI reaches this
GLOBAL = -1  # factor_owners: a factor of every class; dimension_kinds: a global dimension
NEITHER = -2  # dimension_kinds: neither global nor specific to one class


def factor_owners(factors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which images each factor belongs to: ``GLOBAL`` (-1) or the one class that has it.

    Args:
      factors: [N, K] factor values, NaN where an image lacks the factor.
      labels: [N] class of each image.

    Returns:
      [K] int: -1 for a factor present in every image, c for one present exactly in class
      c's images.

    Raises:
      ValueError: a factor present in some other set of images.
    """
    factors, labels = np.asarray(factors), np.asarray(labels)
    present = ~np.isnan(factors)  # [N, K]
    owners = np.empty(factors.shape[1], np.int64)
    for k in range(factors.shape[1]):
        classes = np.unique(labels[present[:, k]])
        if present[:, k].all():
            owners[k] = GLOBAL
        elif len(classes) == 1 and np.array_equal(present[:, k], labels == classes[0]):
            owners[k] = classes[0]
        else:
            raise ValueError(f"factor {k} is present in neither every image nor exactly one "
                             f"class's images (present in {present[:, k].sum()} of "
                             f"{len(labels)}, classes {classes.tolist()})")
    return owners


def bin_codes(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each column of ``codes`` [N, L] cut into ``num_bins`` equal-width bins over its range.

    Returns:
      [N, L] int64 in [0, num_bins): the maximum falls in the last bin, a constant column in
      bin 0.

    Raises:
      ValueError: a value that is not finite.
    """
    codes = np.asarray(codes, np.float64)
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes hold NaN or infinite values; cannot bin them")
    low, high = codes.min(axis=0), codes.max(axis=0)  # [L]
    width = np.where(high > low, high - low, 1.0)  # a constant column: any width puts it in bin 0
    return np.minimum(((codes - low) / width * num_bins).astype(np.int64), num_bins - 1)


def entropy(values: np.ndarray) -> float:
    """Plug-in entropy in nats of the empirical distribution of discrete ``values`` [N]."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def mutual_information(categories: np.ndarray, bins: np.ndarray, num_bins: int) -> np.ndarray:
    """Plug-in mutual information in nats between a discrete variable and each binned column.

    Args:
      categories: [N] int in [0, V), the discrete variable.
      bins: [N, L] int in [0, num_bins).
      num_bins: the bins' count.

    Returns:
      [L] I(categories; bins[:, j]), >= 0.
    """
    n, num_dims = bins.shape
    num_values = int(categories.max()) + 1
    joint_index = (categories[:, None] * num_bins + bins) + np.arange(num_dims) * num_values * num_bins
    joint = np.bincount(joint_index.ravel(), minlength=num_dims * num_values * num_bins)
    joint = joint.reshape(num_dims, num_values, num_bins) / n  # [L, V, B]
    p_value = joint.sum(axis=2, keepdims=True)  # [L, V, 1]
    p_bin = joint.sum(axis=1, keepdims=True)  # [L, 1, B]
    ratio = np.divide(joint, p_value * p_bin, out=np.ones_like(joint), where=joint > 0)
    return np.maximum(np.sum(joint * np.log(ratio), axis=(1, 2)), 0.0)  # rounding: never < 0


def normalized_mutual_information(codes: np.ndarray, factors: np.ndarray, labels: np.ndarray,
                                  num_bins: int = NUM_BINS) -> np.ndarray:
    """I(v_k; z_j) / H(v_k) for every factor k and code dimension j.

    A global factor is scored on every image, a class-specific one on its class's images
    alone, each dimension binned over its range on the images scored (:func:`bin_codes`).

    Args:
      codes: [N, L] the code, e.g. gamma * mu.
      factors: [N, K] factor values, NaN where absent (:func:`factor_owners`).
      labels: [N] classes.
      num_bins: equal-width bins per dimension.

    Returns:
      [K, L] in [0, 1].

    Raises:
      ValueError: a factor that takes a single value on its images (no entropy to share).
    """
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors, np.float64)
    scored = _scored_rows(codes, factors, labels)
    nmi = np.empty((factors.shape[1], codes.shape[1]))
    for k, rows in scored:
        _, categories = np.unique(factors[rows, k], return_inverse=True)
        factor_entropy = entropy(categories)
        if factor_entropy == 0.0:
            raise ValueError(f"factor {k} takes a single value on its images; it has no "
                             "information to find in the code")
        nmi[k] = mutual_information(categories, bin_codes(codes[rows], num_bins), num_bins) / factor_entropy
    return np.minimum(nmi, 1.0)


def mig(nmi: np.ndarray) -> float:
    """Mutual information gap: mean over factors of (largest - second largest) normalised MI.

    Args:
      nmi: [K, L] normalised mutual information, L >= 2.
    """
    nmi = np.asarray(nmi)
    if nmi.shape[1] < 2:
        raise ValueError(f"the mutual information gap needs at least 2 dimensions, got {nmi.shape[1]}")
    top = -np.sort(-nmi, axis=1)  # [K, L] descending
    return float(np.mean(top[:, 0] - top[:, 1]))


def importance_matrix(codes: np.ndarray, factors: np.ndarray, labels: np.ndarray, *,
                      seed: int = 0) -> np.ndarray:
    """R[j, k]: the importance of dimension j in a gradient-boosted regressor of factor k.

    One scikit-learn ``GradientBoostingRegressor`` (its defaults, ``random_state=seed``) per
    factor, fitted on the images that have the factor (all of them, or its class's); its
    impurity importances sum to 1 over dimensions, or are all 0 when no split helps.

    Args:
      codes: [N, L].
      factors: [N, K], NaN where absent.
      labels: [N].
      seed: the regressors' random state.

    Returns:
      [L, K] >= 0.
    """
    from sklearn.ensemble import GradientBoostingRegressor

    codes, factors = np.asarray(codes, np.float64), np.asarray(factors, np.float64)
    scored = _scored_rows(codes, factors, labels)
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    for k, rows in scored:
        regressor = GradientBoostingRegressor(random_state=seed).fit(codes[rows], factors[rows, k])
        importance[:, k] = regressor.feature_importances_
    return importance


def dci_disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix R [L, K] (K >= 2 factors).

    ``sum_j rho_j (1 - H_K(P_j))`` with ``P_j = R[j] / sum_k R[j, k]`` and ``rho_j`` dimension
    j's share of the total importance. Dimensions with no importance carry no weight; 0 when
    no dimension has any.
    """
    importance = np.asarray(importance, np.float64)
    num_factors = importance.shape[1]
    if num_factors < 2:
        raise ValueError(f"DCI disentanglement needs at least 2 factors, got {num_factors}")
    per_dim = importance.sum(axis=1)  # [L]
    total = per_dim.sum()
    if total == 0.0:
        return 0.0
    used = per_dim > 0
    p = importance[used] / per_dim[used, None]  # [L', K]
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    disentanglement = 1.0 + plogp.sum(axis=1) / np.log(num_factors)  # [L']
    return float(np.sum(per_dim[used] / total * disentanglement))


def dimension_kinds(freq: np.ndarray) -> np.ndarray:
    """What each dimension is, from the activation frequencies F [C, L]
    (``metrics.shared_and_specific``'s definitions).

    Returns:
      [L] int: ``GLOBAL`` (-1) when F[c, j] >= 0.5 for every class, c when for class c alone,
      ``NEITHER`` (-2) otherwise.
    """
    split = shared_and_specific(freq)
    kinds = np.full(np.shape(freq)[1], NEITHER)
    kinds[split["global_dims"]] = GLOBAL
    for c, dims in enumerate(split["specific_dims"]):
        kinds[dims] = c
    return kinds


def placement(nmi: np.ndarray, owners: np.ndarray, kinds: np.ndarray) -> list[dict]:
    """Where each factor sits: its best dimension, captured or not, placed or not.

    Args:
      nmi: [K, L] normalised mutual information.
      owners: [K] ``GLOBAL`` or the class owning the factor (:func:`factor_owners`).
      kinds: [L] ``GLOBAL``, a class, or ``NEITHER`` (:func:`dimension_kinds`).

    Returns:
      K dicts: best_dim, nmi (its normalised MI), second_nmi (the next largest over the other
      dimensions), captured (nmi >= CAPTURED), placed (captured, in a dimension whose kind is
      the factor's owner: global for a global factor, the factor's class otherwise).
    """
    rows = []
    for k, owner in enumerate(np.asarray(owners)):
        order = np.argsort(-nmi[k], kind="stable")
        best = int(order[0])
        captured = bool(nmi[k, best] >= CAPTURED)
        rows.append(dict(best_dim=best, nmi=float(nmi[k, best]),
                         second_nmi=float(nmi[k, order[1]]) if len(order) > 1 else 0.0,
                         captured=captured, placed=captured and int(kinds[best]) == int(owner)))
    return rows


def factor_summary(gamma: np.ndarray, mu: np.ndarray, labels: np.ndarray, factors: np.ndarray,
                   factor_names, *, num_classes: int, seed: int = 0) -> dict:
    """Every factor metric of a code, as plain JSON-able values.

    Args:
      gamma: [N, L] spike probabilities.
      mu: [N, L] slab means; the code scored is gamma * mu.
      labels: [N] classes in [0, num_classes).
      factors: [N, K] factor values, NaN where absent.
      factor_names: K names.
      num_classes: C.
      seed: the DCI regressors' random state.

    Returns:
      dict: ``factors`` (K rows: name, kind "global" or "class", class (None for a global
      factor), best_dim, nmi, second_nmi, captured, placed), ``mig``, ``dci_disentanglement``,
      ``counts`` ({"global": {...}, "class": {...}}, each with total, captured and placed),
      ``normalized_mi`` ([K][L]) and ``dimension_kinds`` ([L]: -1 global, c a class's, -2
      neither).
    """
    gamma, mu = np.asarray(gamma, np.float64), np.asarray(mu, np.float64)
    if gamma.shape != mu.shape:
        raise ValueError(f"gamma {gamma.shape} and mu {mu.shape} must have the same shape")
    if len(factor_names) != np.shape(factors)[1]:
        raise ValueError(f"{len(factor_names)} factor names for {np.shape(factors)[1]} factors")
    codes = gamma * mu  # [N, L]
    nmi = normalized_mutual_information(codes, factors, labels)
    owners = factor_owners(factors, labels)
    kinds = dimension_kinds(activation_frequency(gamma, labels, num_classes))
    rows = [{"name": str(name), "kind": "global" if owner == GLOBAL else "class",
             "class": None if owner == GLOBAL else int(owner), **where}
            for name, owner, where in zip(factor_names, owners, placement(nmi, owners, kinds))]
    counts = {kind: {"total": sum(r["kind"] == kind for r in rows),
                     "captured": sum(r["kind"] == kind and r["captured"] for r in rows),
                     "placed": sum(r["kind"] == kind and r["placed"] for r in rows)}
              for kind in ("global", "class")}
    importance = importance_matrix(codes, factors, labels, seed=seed)
    return dict(factors=rows, mig=mig(nmi), dci_disentanglement=dci_disentanglement(importance),
                counts=counts, normalized_mi=nmi.tolist(), dimension_kinds=kinds.tolist())


def _scored_rows(codes: np.ndarray, factors: np.ndarray, labels) -> list[tuple]:
    """(k, rows) for every factor k: the images it is scored on (all, or its class's [N] mask)."""
    if codes.ndim != 2 or factors.ndim != 2:
        raise ValueError(f"codes and factors must be [N, L] and [N, K], got {codes.shape} and "
                         f"{factors.shape}")
    if not len(codes) == len(factors) == len(labels):
        raise ValueError(f"{len(codes)} codes, {len(factors)} factor rows and {len(labels)} labels")
    return [(k, slice(None) if owner == GLOBAL else np.asarray(labels) == owner)
            for k, owner in enumerate(factor_owners(factors, labels))]
