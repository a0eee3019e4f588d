"""Pictures of a trained model: reconstructions and training curves (matplotlib, PNG).

Rendered with the non-interactive Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
    """
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(0.9 * n, 2.0), squeeze=False)
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


def read_metrics(jsonl_path: str) -> list[dict]:
    """The records of a metrics.jsonl file written by the trainer."""
    with open(jsonl_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_curves(jsonl_path: str, path: str) -> str:
    """Save the training loss and the test exact / relaxed negative ELBO against the step."""
    records = read_metrics(jsonl_path)
    train = [r for r in records if r.get("split") == "train"]
    test = [r for r in records if r.get("split") == "test"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if test:
        steps = [r["step"] for r in test]
        ax.plot(steps, [r["exact_neg_elbo"] for r in test], "o-", label="test exact -ELBO")
        ax.plot(steps, [r["relaxed_neg_elbo"] for r in test], "s--", label="test relaxed -ELBO")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per sample")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
