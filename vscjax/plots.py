"""Pictures of a trained model (matplotlib, PNG): reconstructions, training curves, latent
traversals, rows of images (samples from the prior), per-class activation heatmaps, the
class overlap matrix and the factor-by-dimension mutual information.

Rendered with the non-interactive Agg backend, so no display is needed. Every picture is saved
at ``DPI`` dots per inch; each function's docstring gives its size in pixels.
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vscjax.atomic import replace_file  # noqa: E402

DPI = 100
TRAVERSAL_OFFSETS = np.linspace(-3.0, 3.0, 7)  # latent units: +-3 standard deviations of the prior slab
TRAVERSAL_CELL_PX = 28  # height and width of one image in latent_traversals and image_rows
TRAVERSAL_RIGHT_PX = 6  # right margin
ROW_LABEL_FONT = 6  # points: the row and column labels of image_rows
TITLE_FONT = 7  # points: the title of image_rows
TITLE_LINE_PX = 12  # one line of that title
COLUMN_LABELS_PX = 14  # the column labels' band above the grid
MARGIN_PX = 4  # above and below the title, and between the row labels and the grid
HEATMAP_PX = (640, 320)  # class_activation_heatmap and factor_mi_heatmap: width, height
OVERLAP_PX = (460, 400)  # class_overlap_matrix: width, height
MAX_LABELLED_CLASSES = 30  # more classes than this: no class tick labels
MAX_ANNOTATED_CLASSES = 12  # more classes than this: no numbers written in the overlap matrix
MAX_LABELLED_DIMS = 40  # more dimensions than this: no dimension tick labels in the heatmap


def _as_rgb_or_grey(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """[H, W, C] in [0, 1] -> something imshow takes, and its colour map."""
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 1:
        return image[..., 0], "gray"
    return image, None


def reconstruction_grid(images: np.ndarray, reconstructions: np.ndarray, path: str,
                        *, title: str = "") -> str:
    """Save inputs (top row) above their reconstructions (bottom row).

    Args:
      images, reconstructions: [N, H, W, C] in [0, 1].
      path: the PNG to write.

    Size: 90 N by 200 pixels.
    """
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=_figsize(90 * n, 200), squeeze=False)
    for row, batch in enumerate((images, reconstructions)):
        for i in range(n):
            picture, cmap = _as_rgb_or_grey(batch[i])
            axes[row, i].imshow(picture, cmap=cmap, vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("input", fontsize=7, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def training_curves(records: list[dict], path: str) -> str:
    """Save the training loss and the validation exact negative ELBO against the step, and the
    relaxed one where the records hold it (models trained on the relaxed sample).

    Args:
      records: the trainer's metrics records (``vscjax.workdir.read_metrics``).
      path: the PNG to write.

    Size: 500 by 320 pixels.
    """
    train = [r for r in records if r.get("split") == "train"]
    validation = [r for r in records if r.get("split") == "validation"]
    fig, ax = plt.subplots(figsize=_figsize(500, 320))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if validation:
        steps = [r["step"] for r in validation]
        ax.plot(steps, [r["exact_neg_elbo"] for r in validation], "o-", label="validation exact -ELBO")
        relaxed = [(r["step"], r["relaxed_neg_elbo"]) for r in validation if "relaxed_neg_elbo" in r]
        if relaxed:
            ax.plot([s for s, _ in relaxed], [v for _, v in relaxed], "s--",
                    label="validation relaxed -ELBO")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per sample")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ----------------------------------------------------------------------------- latent space


def latent_traversals(decode, codes: np.ndarray, dims: np.ndarray, centres: np.ndarray, path: str,
                      *, row_labels, offsets: np.ndarray = TRAVERSAL_OFFSETS, title: str = "") -> str:
    """Save one row per (code, dimension): the decoded image as one dimension sweeps a range.

    Row r decodes ``codes[r]`` with dimension ``dims[r]`` set to ``centres[r] + offsets[t]`` in
    column t: the spike of that dimension is forced on (a non-zero value), every other
    dimension keeps its value.

    Args:
      decode: latent codes [M, L] -> mean images [M, H, W, C] in [0, 1] (``model.mean_image``).
      codes: [R, L] the base code of each row (e.g. an exemplar's posterior mean code).
      dims: [R] the dimension each row sweeps.
      centres: [R] the centre of each sweep (e.g. the exemplar's slab mean of that dimension).
      path: the PNG to write.
      row_labels: R strings.
      offsets: [T] added to the centre, in latent units (the prior slab has unit variance).
      title: a title above the grid.

    Size: :func:`image_rows_size` of R rows and T columns, labelled.
    """
    codes = np.asarray(codes, np.float32)  # [R, L]
    offsets = np.asarray(offsets, np.float32)  # [T]
    rows, cols = len(codes), len(offsets)
    swept = np.repeat(codes[:, None, :], cols, axis=1)  # [R, T, L]
    swept[np.arange(rows), :, np.asarray(dims)] = np.asarray(centres)[:, None] + offsets  # [R, T]
    images = np.asarray(decode(swept.reshape(rows * cols, -1)))  # [R * T, H, W, C]
    return image_rows(images.reshape(rows, cols, *images.shape[1:]), path, row_labels=row_labels,
                      column_labels=[f"{o:+g}" if o else "0" for o in offsets], title=title)


def image_rows(grid: np.ndarray, path: str, *, row_labels, column_labels=None, title: str = "") -> str:
    """Save rows of images, each row labelled on its left (and each column on top).

    Args:
      grid: [R, T, H, W, C] images in [0, 1].
      path: the PNG to write.
      row_labels: R strings.
      column_labels: T strings, or None for no column labels.
      title: a title above the grid.

    Size: :func:`image_rows_size`.
    """
    grid = np.asarray(grid)
    rows, cols = grid.shape[:2]
    mosaic, cmap = _as_rgb_or_grey(_mosaic(grid))
    layout = _rows_layout(rows, cols, row_labels, column_labels, title)
    width, height = layout["size"]
    fig = plt.figure(figsize=_figsize(width, height))
    # The axes fill the figure but for the margins: [left, bottom, width, height] as fractions.
    ax = fig.add_axes([layout["left"] / width, 0.0, cols * TRAVERSAL_CELL_PX / width,
                       1.0 - layout["top"] / height])
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    cell_h, cell_w = grid.shape[2] + 1, grid.shape[3] + 1  # image and its 1-pixel gap
    ax.set_yticks(np.arange(rows) * cell_h + cell_h / 2 - 1, list(row_labels), fontsize=ROW_LABEL_FONT)
    if column_labels is None:
        ax.set_xticks([])
    else:
        ax.set_xticks(np.arange(cols) * cell_w + cell_w / 2 - 1, list(column_labels),
                      fontsize=ROW_LABEL_FONT)
    ax.xaxis.tick_top()
    ax.tick_params(length=0, pad=MARGIN_PX * 72 / DPI)
    if title:
        fig.suptitle("\n".join(layout["title_lines"]), fontsize=TITLE_FONT,
                     y=1 - MARGIN_PX / height, va="top", linespacing=1.2)
    return _save(fig, path, tight=False)


def image_rows_size(rows: int, cols: int, *, row_labels, column_labels=None,
                    title: str = "") -> tuple[int, int]:
    """(width, height) in pixels of :func:`image_rows` (and :func:`latent_traversals`) of
    ``rows`` by ``cols`` images: the grid of ``TRAVERSAL_CELL_PX`` cells, on its left the
    widest row label, above it the title's lines (wrapped to the width) and the column
    labels, each band only as tall as what it holds."""
    return _rows_layout(rows, cols, row_labels, column_labels, title)["size"]


def _rows_layout(rows: int, cols: int, row_labels, column_labels, title: str) -> dict:
    """The margins (left, top), the size and the title's wrapped lines of an image_rows picture."""
    left = max((_text_px(label, ROW_LABEL_FONT) for label in row_labels), default=0) + 2 * MARGIN_PX
    width = left + cols * TRAVERSAL_CELL_PX + TRAVERSAL_RIGHT_PX
    title_lines = _wrap(title, width - 2 * MARGIN_PX, TITLE_FONT) if title else []
    top = (MARGIN_PX + len(title_lines) * TITLE_LINE_PX + MARGIN_PX * bool(title_lines)
           + (COLUMN_LABELS_PX if column_labels is not None else MARGIN_PX))
    return dict(left=left, top=top, size=(width, top + rows * TRAVERSAL_CELL_PX),
                title_lines=title_lines)


def _text_px(text: str, points: float) -> int:
    """Width in pixels of one line of ``text`` at ``points`` in matplotlib's default font."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=points), ismath=False)  # in points
    return int(np.ceil(width * DPI / 72))


def _wrap(text: str, width_px: int, points: float) -> list[str]:
    """``text`` in lines no wider than ``width_px`` (a word wider than that has a line alone)."""
    lines = []
    for word in text.split():
        if lines and _text_px(f"{lines[-1]} {word}", points) <= width_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def class_activation_heatmap(freq: np.ndarray, path: str, *, class_names=None,
                             min_freq: float = 0.1,
                             title: str = "fraction of each class's samples with gamma_j > 0.5",
                             what: str = "F") -> str:
    """Save the per-class activation frequency F [C, L] (or any [C, L] values in [0, 1], such
    as the learned class masks, named ``what``) as a classes x dimensions heatmap.

    Only dimensions with ``F >= min_freq`` for some class are drawn, ordered by hierarchical
    clustering (average linkage) of their F columns, so dimensions active for the same
    classes sit together. Size: ``HEATMAP_PX`` pixels.
    """
    freq = np.asarray(freq, np.float64)  # [C, L]
    kept = np.flatnonzero(freq.max(axis=0) >= min_freq)
    kept = kept[_cluster_order(freq[:, kept].T)]
    return _dimension_heatmap(
        freq, kept, path, row_ticks=lambda set_ticks: _class_ticks(set_ticks, len(freq), class_names),
        dim_labels=[str(j) for j in kept], title=title,
        empty=f"no dimension has {what} >= {min_freq:g} for any class",
        xlabel=f"{len(kept)} of {freq.shape[1]} dimensions ({what} >= {min_freq:g} for some class; "
               "clustered)")


def class_overlap_matrix(overlap: np.ndarray, path: str, *, class_names=None,
                         title: str = "class overlap") -> str:
    """Save a symmetric [C, C] overlap matrix with values in [0, 1] (numbers written for
    ``MAX_ANNOTATED_CLASSES`` classes or fewer). Size: ``OVERLAP_PX`` pixels."""
    overlap = np.asarray(overlap, np.float64)  # [C, C]
    num_classes = len(overlap)
    fig, ax = plt.subplots(figsize=_figsize(*OVERLAP_PX))
    image = ax.imshow(overlap, vmin=0, vmax=1, cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    _class_ticks(ax.set_xticks, num_classes, class_names)
    _class_ticks(ax.set_yticks, num_classes, class_names)
    if num_classes <= MAX_ANNOTATED_CLASSES:
        for (a, b), value in np.ndenumerate(overlap):
            ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=5,
                    color="black" if value > 0.6 else "white")
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


def factor_mi_heatmap(nmi: np.ndarray, path: str, *, factor_names, dimension_kinds=None,
                      min_mi: float = 0.05,
                      title: str = "normalised mutual information I(v_k; z_j) / H(v_k)") -> str:
    """Save the normalised mutual information [K, L] of factors and code dimensions as a
    factors x dimensions heatmap (``vscjax.factor_metrics``).

    Only dimensions with a value >= ``min_mi`` for some factor are drawn, grouped by the factor
    they share most with (in factor order), the strongest first within a group. With
    ``dimension_kinds`` ([L]: -1 global, c >= 0 specific to class c, else neither) each
    dimension's tick says its kind: "g" global, "c<n>" class n's. Size: ``HEATMAP_PX`` pixels.

    Args:
      nmi: [K, L] values in [0, 1].
      path: the PNG to write.
      factor_names: K names.
      dimension_kinds: [L] ints, or None.
      min_mi: the smallest largest value of a dimension drawn.
      title: a title above the heatmap.
    """
    nmi = np.asarray(nmi, np.float64)  # [K, L]
    kept = np.flatnonzero(nmi.max(axis=0) >= min_mi)
    kept = kept[np.lexsort((-nmi[:, kept].max(axis=0), nmi[:, kept].argmax(axis=0)))]
    kinds = None if dimension_kinds is None else np.asarray(dimension_kinds)
    return _dimension_heatmap(
        nmi, kept, path, title=title,
        row_ticks=lambda set_ticks: set_ticks(np.arange(len(nmi)), list(factor_names), fontsize=6),
        dim_labels=[str(j) if kinds is None else f"{j} {_kind_label(kinds[j])}" for j in kept],
        empty=f"no dimension has a value >= {min_mi:g} for any factor",
        xlabel=f"{len(kept)} of {nmi.shape[1]} dimensions (value >= {min_mi:g} for some factor; "
               "g: global, c<n>: class n's)")


def _kind_label(kind: int) -> str:
    """A dimension kind as a tick: "g" (global, -1), "c<n>" (class n's), "" (neither)."""
    return "g" if kind == -1 else f"c{kind}" if kind >= 0 else ""


def _dimension_heatmap(values: np.ndarray, kept: np.ndarray, path: str, *, row_ticks, dim_labels,
                       empty: str, xlabel: str, title: str) -> str:
    """Save the columns ``kept`` of ``values`` [R, L] (in [0, 1]) as a heatmap of HEATMAP_PX,
    rows labelled by ``row_ticks(ax.set_yticks)``, columns by ``dim_labels`` (up to
    MAX_LABELLED_DIMS of them); the text ``empty`` when no column is kept."""
    fig, ax = plt.subplots(figsize=_figsize(*HEATMAP_PX))
    if not len(kept):
        ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=8)
        ax.axis("off")
        return _save(fig, path)
    image = ax.imshow(values[:, kept], vmin=0, vmax=1, cmap="viridis", aspect="auto",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=6)
    row_ticks(ax.set_yticks)
    if len(kept) <= MAX_LABELLED_DIMS:
        ax.set_xticks(np.arange(len(kept)), dim_labels, fontsize=5, rotation=90)
    else:
        ax.set_xticks([])
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_title(title, fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------- helpers


def _mosaic(grid: np.ndarray) -> np.ndarray:
    """Images [R, T, H, W, C] -> one picture [R (H + 1) - 1, T (W + 1) - 1, C], 1-pixel white gaps."""
    padded = np.pad(grid, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)), constant_values=1.0)
    rows, cols, height, width, channels = padded.shape
    picture = padded.transpose(0, 2, 1, 3, 4).reshape(rows * height, cols * width, channels)
    return picture[:-1, :-1]


def _cluster_order(points: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering of points [M, D]: [M] indices."""
    if len(points) < 2:
        return np.arange(len(points))
    from scipy.cluster.hierarchy import leaves_list, linkage

    return leaves_list(linkage(points, method="average"))


def _class_ticks(set_ticks, num_classes: int, class_names) -> None:
    """Class names (default: the class indices) as ticks, or none for many classes."""
    if num_classes > MAX_LABELLED_CLASSES:
        set_ticks([])
        return
    names = class_names if class_names is not None else [str(c) for c in range(num_classes)]
    set_ticks(np.arange(num_classes), list(names), fontsize=6)


def _figsize(width_px: int, height_px: int) -> tuple[float, float]:
    """Inches giving exactly this many pixels at ``DPI`` (matplotlib truncates, so add half a pixel)."""
    return (width_px + 0.5) / DPI, (height_px + 0.5) / DPI


def _save(fig, path: str, *, tight: bool = True) -> str:
    """Write ``fig`` to the PNG ``path`` whole (``atomic.replace_file``); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    # A 256-colour palette: files half the size of matplotlib's RGBA ones, no visible change.
    with replace_file(path, "wb") as f:
        Image.open(buffer).convert("RGB").quantize(256).save(f, format="PNG", optimize=True)
    return path
