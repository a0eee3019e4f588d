"""Class-aware VSC on Fashion-MNIST: configs/mnist.py on the Fashion-MNIST IDX files.

    python train.py --config configs/fashion_mnist.py --workdir workdir/fashion_mnist
    python -m vscjax.evaluate --workdir workdir/fashion_mnist

MLP 400, L=200, alpha=0.01, straight-through spikes (c from 1 to 30), class-balanced batches
of 120, centroid alignment weight 5 (chosen on MNIST), 10,000 steps.
Measured results live in generated files, not here: the row "VSC + paper's alignment, centroid"
of the Fashion-MNIST results in README.md and reports/README.md, from reports/results.json
(`python reports/make_report.py`).
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist.py"), {"data.name": "fashion_mnist"})
