"""Class-aware VSC on MNIST: configs/mnist_vsc.py plus the paper's class alignment loss.

    python train.py --config configs/mnist.py --workdir workdir/mnist
    python -m vscjax.evaluate --workdir workdir/mnist

Same network, prior, sharpness ramp and budget as mnist_vsc.py (MLP 400, L=200, alpha=0.01,
10,000 steps) with class-balanced batches of 120 (12 per class) and the centroid alignment
loss, weight 5: of the weights 2, 5 and 10, the largest same-class Jaccard whose bound stays
within a 5-nat margin of plain VSC's on the validation split
(reports/sweeps/align_centroid*.md). The class-mask prior (mnist_class_prior.py) aligns more at
a better bound.
Measured results live in generated files, not here: the row "VSC + paper's alignment, centroid"
of the MNIST results in README.md and reports/README.md, from reports/results.json (`python
reports/make_report.py`).
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_vsc.py"), {
        "data.balanced": True,
        "train.batch_size": 120,
        "objective.align_mode": "centroid",
        "objective.align_weight.value": 5.0,
    })
