"""Which pictures a run and an evaluation draw, and what each one shows (``vscjax.plots`` draws).

* :func:`draw_training_figures`, at the end of a run: validation reconstructions, samples from
  the prior and the training curves;
* :func:`draw_evaluation_figures`, by ``vscjax.evaluate``: latent traversals of each class's
  strongest dimensions, the class activation heatmap, the class overlap matrix, traversals of
  the global and class-specific dimensions and the learned class masks; on a data set with
  known factors, the factor-by-dimension mutual information and a traversal of each factor's
  most informative dimension.

The choices (which images, which dimensions, which rows) are functions here, so that they can
be tested apart from the drawing.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from vscjax import plots
from vscjax.codes import Codes
from vscjax.metrics import ACTIVE_THRESHOLD
from vscjax.trained import TrainedModel

# ----------------------------------------------------------------------------- end of a run


def prior_sample_rows(model: TrainedModel, key: jax.Array, *, per_row: int = 10,
                      unlabelled_rows: int = 3) -> tuple[np.ndarray, list[str]]:
    """Rows of samples from the prior, for a picture: one row per class where the prior has
    classes (the class-mask prior), else ``unlabelled_rows`` rows.

    Returns:
      (images [R, per_row, H, W, C], R row labels).
    """
    if model.prior == "class_mask":
        labels = list(range(model.num_classes))
        names = [f"class {c}" for c in labels]
    else:
        labels = [None] * unlabelled_rows
        names = [f"{model.prior} prior"] * unlabelled_rows
    rows = [model.sample(per_row, jax.random.fold_in(key, r), label=label) for r, label in enumerate(labels)]
    return np.stack(rows), names


def draw_training_figures(model: TrainedModel, images: np.ndarray, records: list[dict],
                          plot_dir: str, key: jax.Array) -> list[str]:
    """The cheap pictures of a finished run, into ``plot_dir``.

    Args:
      model: the trained model.
      images: validation images [N, H, W, C], shown with their reconstructions (posterior
        mean code).
      records: the run's metrics records, for the training curves.
      plot_dir: the folder written.
      key: the noise of the samples from the prior.

    Returns:
      The paths written.
    """
    samples, row_labels = prior_sample_rows(model, key)
    return [
        plots.reconstruction_grid(images, model.reconstruct(images),
                                  os.path.join(plot_dir, "reconstructions.png"),
                                  title="validation inputs and reconstructions (spikes: gamma > 0.5)"),
        plots.image_rows(samples, os.path.join(plot_dir, "prior_samples.png"), row_labels=row_labels,
                         title=f"samples from the {model.prior} prior (decoder mean images)"),
        plots.training_curves(records, os.path.join(plot_dir, "training_curves.png")),
    ]


# ----------------------------------------------------------------------------- evaluation


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


def best_dim_rows(codes: Codes, labels: np.ndarray, factors: dict) -> list[tuple[int, int, str]]:
    """(sample, dimension, row label) for a traversal of each known factor's most informative
    dimension, on the first image that has the factor (any image for a global factor, one of
    its class's for a class's factor) with that dimension active, else the first that has it.

    Args:
      codes: the evaluated split's codes; labels: its labels [N].
      factors: eval.json's factors section (``factor_metrics.factor_summary`` rows).
    """
    rows = []
    for f in factors["factors"]:
        j = f["best_dim"]
        has_factor = np.ones(len(labels), bool) if f["class"] is None else labels == f["class"]
        active = np.flatnonzero(has_factor & (codes.gamma[:, j] > ACTIVE_THRESHOLD))
        i = int(active[0]) if len(active) else int(np.argmax(has_factor))
        rows.append((i, j, f"{f['name']}: dim {j} (MI {f['nmi']:.2f})"))
    return rows


def _traversal(model, codes: Codes, rows, path: str, title: str) -> str:
    index, dims = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    return plots.latent_traversals(
        lambda z: model.mean_image(jnp.asarray(z)), codes.mean_code[index], dims,
        codes.mu[index, dims], path, row_labels=[r[2] for r in rows], title=title)


def draw_evaluation_figures(model, codes: Codes, labels: np.ndarray, activation: dict | None,
                            plot_dir: str, *, top_k: int = 3, factors: dict | None = None) -> list[str]:
    """Latent traversals (always) and, with spikes, the class activation heatmap, the class
    overlap matrix, traversals of the global and class-specific dimensions (where there are
    any) and the learned class masks (class-mask prior), into ``plot_dir``; with known
    factors, their mutual information with every dimension and a traversal of each factor's
    most informative dimension.

    Args:
      model: the NNX model.
      codes: the evaluated split's codes; labels: its labels [N].
      activation: eval.json's class activation section (None for a plain VAE).
      plot_dir: the folder written.
      top_k: dimensions traversed per class.
      factors: eval.json's factors section (None for a data set without known factors).

    Returns:
      The paths written.
    """
    exemplars = [int(np.argmax(labels == c)) for c in np.unique(labels)]  # first sample per class
    rows = [(i, j, f"class {labels[i]} dim {j} (γ {codes.gamma[i, j]:.2f})" if codes.spikes
             else f"class {labels[i]} dim {j}")
            for i in exemplars for j in top_dims(codes, i, top_k)]  # (sample, dim, label)
    paths = [_traversal(model, codes, rows, os.path.join(plot_dir, "latent_traversals.png"),
                        f"top-{top_k} dimensions of one image per class: mu + offset, spike on")]
    if activation is not None:
        freq = np.asarray(activation["frequency"])
        paths.append(plots.class_activation_heatmap(freq, os.path.join(plot_dir, "class_activation.png")))
        kind_rows = factor_rows(codes, labels, activation)
        if kind_rows:
            paths.append(_traversal(model, codes, kind_rows, os.path.join(plot_dir, "factor_traversals.png"),
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
    if factors is not None:
        paths.append(plots.factor_mi_heatmap(
            np.asarray(factors["normalized_mi"]), os.path.join(plot_dir, "factor_mi.png"),
            factor_names=[f["name"] for f in factors["factors"]],
            dimension_kinds=factors["dimension_kinds"],
            title=f"normalised MI of each known factor and each dimension of {factors['code']}"))
        paths.append(_traversal(model, codes, best_dim_rows(codes, labels, factors),
                                os.path.join(plot_dir, "factor_best_dims.png"),
                                "each known factor's most informative dimension, on an image that "
                                "has the factor: mu + offset, spike on"))
    return paths
