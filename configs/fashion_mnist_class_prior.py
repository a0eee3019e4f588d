"""The class-mask prior on Fashion-MNIST: configs/mnist_class_prior.py on the Fashion-MNIST files.

    python train.py --config configs/fashion_mnist_class_prior.py --workdir workdir/fashion_mnist_class_prior
    python -m vscjax.evaluate --workdir workdir/fashion_mnist_class_prior

With the settings of the Fashion-MNIST sweep (reports/sweeps/fashion_cp.md): constant c=10,
partial sharing 0.03: validation bound 245.28 nats (VSC 254.77), Jaccard 0.647 / 0.361;
partial sharing 0.1 gave 247.73 and 0.457 / 0.141.
Test set (`python reports/make_report.py`): bound 246.4 nats (VSC 255.7; under the fixed
prior 257.4), Jaccard 0.703 / 0.394 (0.533 / 0.122 without its 2 global dimensions), a
dimension of its own for 4 of 10 classes, probe 83.3%.
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_class_prior.py"), {
        "data.name": "fashion_mnist",
        "objective.c.kind": "constant",
        "objective.c.value": 10.0,
        "objective.c.start": 10.0,
        "objective.partial_sharing": 0.03,
    })
