"""Plain VSC on Fashion-MNIST: configs/mnist_vsc.py on the Fashion-MNIST IDX files.

    python train.py --config configs/fashion_mnist_vsc.py --workdir workdir/fashion_mnist_vsc
    python -m vscjax.evaluate --workdir workdir/fashion_mnist_vsc

MLP 400, L=200, alpha=0.01, fixed prior, batch 128, 10,000 steps, straight-through spikes with
the sharpness ramp of mnist_vsc.py (c from 1 to 30), which beat constant c on Fashion-MNIST's
validation split too (reports/sweeps/fashion_vsc_c.md, fashion_vsc_ramp.md).
Measured results live in generated files, not here: the row "VSC (fixed prior)" of the
Fashion-MNIST results in README.md and reports/README.md, from reports/results.json (`python
reports/make_report.py`).
"""

import os

from vscjax.config import load_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    return load_file(os.path.join(here, "mnist_vsc.py"), {"data.name": "fashion_mnist"})
