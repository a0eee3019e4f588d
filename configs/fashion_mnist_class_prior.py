"""The class-mask prior on Fashion-MNIST: configs/mnist_class_prior.py on the Fashion-MNIST files.

    python train.py --config configs/fashion_mnist_class_prior.py --workdir workdir/fashion_mnist_class_prior
    python -m vscjax.evaluate --workdir workdir/fashion_mnist_class_prior

With the settings of the Fashion-MNIST sweep (reports/sweeps/fashion_cp.md): constant c=10,
partial sharing 0.03.
Measured results live in generated files, not here: the row "class-mask prior" of the
Fashion-MNIST results in README.md and reports/README.md, from reports/results.json (`python
reports/make_report.py`).
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
