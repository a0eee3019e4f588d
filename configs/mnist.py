"""Class-aware VSC on MNIST: configs/mnist_vsc.py plus the class alignment loss.

    python train.py --config configs/mnist.py --workdir workdir/mnist
    python -m vscjax.evaluate --workdir workdir/mnist

Same network, prior and budget as mnist_vsc.py (MLP 400, L=200, alpha=0.01, 10,000 steps)
with class-balanced batches of 120 (12 per class) and the centroid alignment loss.
Runtime here (2 CPU cores): TBD. Expected result (measured, README): TBD
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_vsc.py"), {
        "data.balanced": True,
        "train.batch_size": 120,
        "objective.align_mode": "centroid",
        "objective.align_weight.value": 10.0,
    })
